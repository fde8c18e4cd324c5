"""Training one version: the window's rows with ỹ_last, the losses, the optimisers and the
regulariser, the epoch loop, more than one process, and publishing the result."""
