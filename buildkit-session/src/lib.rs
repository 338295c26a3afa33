//! The client side of a BuildKit session: the services the daemon calls back into
//! during a build (registry auth, secrets, SSH agent forwarding, file sync of local
//! contexts, receiving exports), served over any byte stream.
