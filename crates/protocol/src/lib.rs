//! Messages between the berth server and its agents, versioned.
