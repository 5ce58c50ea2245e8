"""One module per scheduled job. Each job's only argument is the registry's URL (and its own
settings), so that the job store can hold it by reference; what it works with is the process's
`Runtime` (`manager.daemon.runtime`)."""
