"""The reward methods by name, in the order the help and the tables list them (the registry
maps each to its class)."""

METHOD_NAMES = ("naive", "confounder-input", "deconfound", "odin", "crm")
