"""AWS for development and tests: a moto server with AWS's semantics where sgmesh's safety rests
on them (`moto_server`, `moto_aws`), and the world builder that fills it (`world`)."""
