"""Inputs: one process per configured input; each turns what it watches into Events on its queue."""
