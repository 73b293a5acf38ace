package amp

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/ampmux/ampmux/amp/box"
)

// BoxHandler answers one command box by filling resp. req is valid only
// until the handler returns: it may alias the connection's read buffer.
// An error becomes an error answer (see Responder.ErrorAnswer).
type BoxHandler func(ctx context.Context, req, resp *box.Box) error

// Responder is what a connection runs for one command name.
type Responder struct {
	Name string
	// Inline responders run on the connection's reader goroutine, as every
	// Twisted responder does: fastest, but they must not block, or the
	// whole connection stalls. Others run on their own goroutine.
	Inline bool
	Serve  BoxHandler
	// ErrorAnswer maps an error from Serve to the error answer; nil means
	// the package-level ErrorAnswer.
	ErrorAnswer func(error) (code, description string, fatal bool)
}

// Answer maps err to the error answer for this responder.
func (r *Responder) Answer(err error) (code, description string, fatal bool) {
	if r.ErrorAnswer != nil {
		return r.ErrorAnswer(err)
	}
	return ErrorAnswer(err)
}

// Locator finds the responder for a command name; nil means none (the
// caller gets UNHANDLED).
type Locator interface {
	Responder(name []byte) *Responder
}

// Mux is a Locator holding responders by command name. Registration is
// safe at any time, also while connections use it; lookups take no lock.
type Mux struct {
	mu sync.Mutex // serialises writers
	m  atomic.Pointer[map[string]*Responder]
}

// NewMux returns an empty Mux.
func NewMux() *Mux { return &Mux{} }

// Responder implements Locator.
func (m *Mux) Responder(name []byte) *Responder {
	p := m.m.Load()
	if p == nil {
		return nil
	}
	return (*p)[string(name)]
}

// Names returns the registered command names.
func (m *Mux) Names() []string {
	p := m.m.Load()
	if p == nil {
		return nil
	}
	names := make([]string, 0, len(*p))
	for n := range *p {
		names = append(names, n)
	}
	return names
}

// Add registers r, replacing any responder of the same name.
func (m *Mux) Add(r *Responder) {
	if r == nil || r.Serve == nil || r.Name == "" {
		panic("amp: Mux.Add needs a named responder with Serve")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	next := map[string]*Responder{}
	if p := m.m.Load(); p != nil {
		next = maps.Clone(*p)
	}
	next[r.Name] = r
	m.m.Store(&next)
}

// HandleBox registers a raw responder that runs on its own goroutine.
func (m *Mux) HandleBox(name string, h BoxHandler) {
	m.Add(&Responder{Name: name, Serve: h})
}

// HandleBoxInline registers a raw responder that runs on the reader
// goroutine; it must not block.
func (m *Mux) HandleBoxInline(name string, h BoxHandler) {
	m.Add(&Responder{Name: name, Serve: h, Inline: true})
}

// Handle registers fn as the responder for cmd, on its own goroutine per
// call (bounded by the connection's limit).
func Handle[A, R any](m *Mux, cmd *Command[A, R], fn func(ctx context.Context, args A) (R, error)) {
	m.Add(cmd.Responder(fn, false))
}

// HandleInline registers fn as the responder for cmd, run on the
// connection's reader goroutine. Use it for handlers that never block (no
// I/O, no locks held for long): it is several times faster.
func HandleInline[A, R any](m *Mux, cmd *Command[A, R], fn func(ctx context.Context, args A) (R, error)) {
	m.Add(cmd.Responder(fn, true))
}

// Responder wraps fn with cmd's argument and response conversion.
func (c *Command[A, R]) Responder(fn func(ctx context.Context, args A) (R, error), inline bool) *Responder {
	return &Responder{
		Name:        c.name,
		Inline:      inline,
		ErrorAnswer: c.ErrorAnswer,
		Serve: func(ctx context.Context, req, resp *box.Box) error {
			fds := fdTransportFrom(ctx)
			h := c.getHolder()
			defer c.putHolder(h)
			if err := c.DecodeArgs(req, &h.a, fds); err != nil {
				// The peer sent what the schema rejects: say so, and keep
				// the connection (the fault is in that one box).
				return &RemoteError{Code: CodeUnknown, Description: err.Error(), Err: err}
			}
			var err error
			if h.r, err = fn(ctx, h.a); err != nil {
				return err
			}
			if err := c.EncodeResponse(resp, &h.r, fds); err != nil {
				return fmt.Errorf("amp: responder for %s returned a response that cannot be sent: %w", c.name, err)
			}
			return nil
		},
	}
}
