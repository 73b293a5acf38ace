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
//
// # Reverse tunnels
//
// A route can be served from behind NAT: an agent that can only dial out
// publishes it through the gateway (frp's and ngrok's model, over the
// gateway's one AMP port, the agent known by its certificate). On the
// gateway, Registry.Expose(name, publishers, policy) offers route name to
// clients under policy like any route, and tunnels each client to a
// publisher: an agent whose verified certificate's PeerName is in
// publishers. On the agent, ListenRemote (or a Publisher, for its
// options) returns a net.Listener whose Accept yields those clients, so
// that http.Serve and the like serve them unchanged.
// Registry.AcceptPublishers is the gateway's publishing side alone, for
// a route whose handler is the caller's and dials the publisher with
// Exposure.Dial (as it would dial a backend).
//
// The wire, after StartTLS with the agent's client certificate on every
// connection (all of it AMP: a Twisted gateway answers UNHANDLED, and
// the agent gives up):
//
//	_ampmux_publish(name String, session String) -> {}      agent -> gateway
//	    errors UNKNOWN_PROTOCOL, TLS_REQUIRED, FORBIDDEN, ALREADY_PUBLISHED
//	_ampmux_standby(name String, session String)            agent -> gateway, no answer
//	_ampmux_more(name String, n Integer)                    gateway -> agent, no answer
//	ProtocolSwitch(protocol String) -> {}                   gateway -> agent, on a standby
//	    with peer String, peer_name String: the client's address and PeerName
//
// The agent's control connection calls _ampmux_publish. The gateway
// checks TLS 1.2+, a verified certificate, and that its PeerName is a
// publisher (else FORBIDDEN; UNKNOWN_PROTOCOL if name is not exposed) and
// records the publisher until that connection ends. One publisher at a
// time: while its control connection lives, another is refused with
// ALREADY_PUBLISHED (ErrAlreadyPublished), as frp refuses a proxy name
// already in use, unless it is the same identity with the same session
// (random, drawn by the agent once and kept across its reconnections):
// then the old control connection is stale (gone without a FIN, not yet
// noticed) and is replaced. The agent also opens Publisher.Standby
// (default 2) standby connections, each announcing itself with
// _ampmux_standby; the gateway keeps those of the current publisher and
// session (others it hangs up on) as AMP connections, still read, so
// that their end is seen at once. When a client switches to the route,
// the gateway takes a standby and sends it, itself, a ProtocolSwitch to
// the route: the agent answers, both ends hand the connection over, the
// agent's side goes to Accept, and the gateway pipes it to the client
// (tunnel.PipeWith: half-closes pass through both ways), whose switch is
// answered only then. With no standby ready, the gateway asks for one
// more with _ampmux_more on the control connection and the client's
// switch waits for it, up to the policy's PrepareTimeout. The agent
// replaces each standby used, so that a client seldom waits for a
// handshake. With no publisher, a switch to the route is refused at once
// with UNAVAILABLE; so it is when the agent refuses (closing, or
// Publisher.Backlog connections not accepted).
//
// States, on the gateway: unpublished ──publish──▶ published ──control
// connection ends, Exposure.Disconnect, replaced──▶ unpublished (its
// standbys closed, waiting clients refused); Exposure.Close (or
// Unregister of an exposed route) ends it for good. On the agent:
// connecting ──published──▶ serving ──control connection ends──▶
// backing off ──▶ connecting ...; a refusal (FORBIDDEN, ALREADY_PUBLISHED,
// UNKNOWN_PROTOCOL, TLS_REQUIRED, UNHANDLED) is final: Listen returns it
// the first time, Accept afterwards, as a *PublishError naming route and
// identity. The wait before reconnecting doubles from BackoffMin to
// BackoffMax, jittered, and starts again after a publish; standby
// connections that end unused back off the same way.
//
// Goroutines, and who owns what. Gateway: each publisher has one
// goroutine waiting for its control connection's end; standbys have
// none (the Exposure holds them, under its lock, pruned as they end);
// a client's switch runs the claim in its Prepare, on its connection's
// reader, and the pipe in its handler; closing dropped connections runs
// on short goroutines of their own. Agent: one goroutine runs the
// sessions one after another (control connection, reconnections, the
// standby count), one per standby connection holds it until it is
// switched or ends, and one per switched connection delivers it to
// Accept. Close cancels them all, closes every connection the listener
// holds and returns once they have exited; connections accepted belong
// to the caller. The control connection has a heartbeat
// (Publisher.Heartbeat, 30 s), so that a gateway gone silent is left
// within Heartbeat + HeartbeatTimeout; the gateway notices an agent gone
// by its own conn.Config.Heartbeat and TCP keep-alive.
package switching
