//! Domain types of gabbro (projects, workflows, runs, ...) and the run state
//! machine. Pure: no I/O.
