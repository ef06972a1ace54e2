"""Training: the host loop (`loop.train`), the compiled step (`step`), losses, the
optimiser and its schedule (`optim`), the end of an epoch (`epochs`), the run's inputs
(`inputs`), its record for resume (`run_record`), the steps of a time budget
(`budget`), distribution (`distribute`), TensorBoard and progress (`summaries`) and the
named kill points of the crash tests (`faults`)."""
