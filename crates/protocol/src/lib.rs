//! Lightning's worker protocol: Phoenix Channels v2 frames, every
//! worker ⇄ orchestrator message, worker and run tokens.
