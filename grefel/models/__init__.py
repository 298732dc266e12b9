"""GReFEL models: the POSTER++-style encoder, the reliability balancing head and the losses."""
