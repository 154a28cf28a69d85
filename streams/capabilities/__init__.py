"""The I/O shells of capabilities that need more than an agent module: they drive the pure processors and write through sinks."""
