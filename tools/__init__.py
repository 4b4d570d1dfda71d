"""Project tools run by hand or by make (not part of the service or training)."""
