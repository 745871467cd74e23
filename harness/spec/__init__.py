"""What a run is: the config and presets, the network's records and their dataflow graph, the parameters,
the data (IDX files), and what a config costs before anything is allocated."""
