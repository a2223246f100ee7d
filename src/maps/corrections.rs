//! Learned ETA corrections per region and hour of day. (Being built.)
