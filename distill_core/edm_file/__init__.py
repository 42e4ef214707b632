"""The pieces of the EDM file reader (`distill_core.edm_pickle`): errors, grammar, storages, values, arguments."""
