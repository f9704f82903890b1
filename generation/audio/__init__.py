"""Audio in and out: reading and writing files, encoding formats under a size limit, and pure signal helpers."""
