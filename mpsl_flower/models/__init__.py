"""Client-side tokenizers and the server-side encoder, fusion, readout and head."""
