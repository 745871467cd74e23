"""Running implementations: job directories, capture modes, the runner and the in-process child, the
processes of a run and its signals, and where a command's outputs may go."""
