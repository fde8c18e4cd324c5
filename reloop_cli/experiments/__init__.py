"""Research drivers of the same stages: the simulated world, the open and closed loop, repeats
over seeds and worlds, and the paper's static protocol."""
