"""The field technician's laptop tool: firmware bundle, board access, registration."""
