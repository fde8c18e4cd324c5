"""What a running command needs around its work: progress bars, fault points for the kill tests,
the files bundled with the package."""
