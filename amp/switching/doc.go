// Package switching negotiates a protocol switch over AMP: a client
// secures the connection with StartTLS, asks for an inner protocol by name
// with ProtocolSwitch, and both ends then hand the connection (TLS and
// all) to that protocol, with no byte lost or duplicated at the boundary.
//
// The wire contract, which other implementations follow:
//
//	ProtocolSwitch(protocol String) -> {}
//	    errors UNKNOWN_PROTOCOL, TLS_REQUIRED, FORBIDDEN, UNAVAILABLE
//	ListProtocols() -> protocols ListOf(Unicode)
//
// On the server, a Registry holds the inner protocols with their policies
// (TLS required unless stated, and who may use them), and Install puts its
// responders on an amp.Mux. A protocol is served by a function taking the
// switched net.Conn, or through a net.Listener so that an http.Server, a
// grpc.Server or an SSH server can Serve switched connections unchanged.
//
// A client certificate is known by one name, PeerName's: its first DNS
// SAN if it has any (its common name then does not count, as for
// x509.Certificate.VerifyHostname), else its common name. AllowedNames in
// a Policy matches the DNS SANs, or that one common name; a subject with
// several common names (CN=bob,CN=alice, which Go reads as alice and
// OpenSSL as bob) is refused with FORBIDDEN, and PeerName fails on it
// with ErrSeveralCommonNames. Use PeerName for logs and per-client limits.
//
// TLS means TLS 1.2 or later (MinTLSVersion) on both ends: a switch over
// an older version is refused with TLS_REQUIRED unless the policy allows
// plaintext.
//
// On the client, Dial (or Client over an existing connection) does the
// whole negotiation and returns the inner protocol's net.Conn. A nil
// *tls.Config means the system roots everywhere; the inner protocol runs
// in the clear only through the functions and the Dialer field named
// InsecurePlaintext, and verification is off only with an explicit
// tls.Config.InsecureSkipVerify. A MinVersion below TLS 1.2 is raised to
// it (on a copy). Dial verifies the host it dialled; Client, which
// cannot know it, needs tls.Config.ServerName. A Dialer
// holds the options; with Optimistic it returns once the switch request is
// written, so that the caller's first bytes follow it in the same flight
// (setup then costs about what a plain TLS dial does), and a refused switch
// shows as a *DialError on the first Read.
package switching
