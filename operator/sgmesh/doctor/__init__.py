"""`sgmesh doctor`: the diagnosis and its rendering."""
