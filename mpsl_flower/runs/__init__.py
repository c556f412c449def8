"""The results of a run, written by the ServerApp and read by notebooks and benches: the results folder (its
files, the writer, the run's facts, the readers), the epoch record and its keys, resuming, saved models."""
