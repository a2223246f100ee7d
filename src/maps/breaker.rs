//! A circuit breaker: after consecutive failures calls are refused at once for a cool-down,
//! then one trial call decides. (Being built.)
