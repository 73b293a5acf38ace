package switching

import (
	"errors"

	"github.com/ampmux/ampmux/amp"
)

// Wire names of the commands and error codes.
const (
	CommandProtocolSwitch = "ProtocolSwitch"
	CommandListProtocols  = "ListProtocols"

	CodeUnknownProtocol = "UNKNOWN_PROTOCOL"
	CodeTLSRequired     = "TLS_REQUIRED"
	CodeForbidden       = "FORBIDDEN"
	CodeUnavailable     = "UNAVAILABLE"
)

// The refusals, as errors: a server's policy returns them (wrapped, with
// detail), and a client's error errors.Is them.
var (
	ErrUnknownProtocol = errors.New("switching: unknown protocol")
	ErrTLSRequired     = errors.New("switching: TLS required")
	ErrForbidden       = errors.New("switching: forbidden")
	ErrUnavailable     = errors.New("switching: unavailable")
)

// SwitchArgs are ProtocolSwitch's arguments.
type SwitchArgs struct {
	Protocol []byte `amp:"protocol"`
}

// ProtocolsReply is ListProtocols' response.
type ProtocolsReply struct {
	Protocols []string `amp:"protocols"`
}

// ProtocolSwitch asks the peer to switch to an inner protocol.
var ProtocolSwitch = amp.NewCommand[SwitchArgs, struct{}](CommandProtocolSwitch, amp.Spec{
	Errors: map[string]error{
		CodeUnknownProtocol: ErrUnknownProtocol,
		CodeTLSRequired:     ErrTLSRequired,
		CodeForbidden:       ErrForbidden,
		CodeUnavailable:     ErrUnavailable,
	},
})

// ListProtocols asks which inner protocols this caller may switch to.
var ListProtocols = amp.NewCommand[struct{}, ProtocolsReply](CommandListProtocols, amp.Spec{})
