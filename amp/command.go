package amp

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/ampmux/ampmux/amp/box"
)

// Caller sends boxes and waits for answers: what a connection offers
// commands. *conn.Conn implements it.
type Caller interface {
	// CallBox sends a command box with args and fills reply with the
	// answer's fields. An error answer is returned as *RemoteError.
	CallBox(ctx context.Context, command string, args, reply *box.Box) error
	// SendBox sends a command box that asks for no answer.
	SendBox(ctx context.Context, command string, args *box.Box) error
}

// Spec declares what a command may fail with, as Twisted's Command
// attributes errors, fatalErrors and requiresAnswer do.
type Spec struct {
	// Errors maps wire error codes to the Go errors they stand for. A
	// responder returning an error that errors.Is one of them answers with
	// its code; a caller receiving the code gets a *RemoteError that
	// errors.Is the same error.
	Errors map[string]error
	// FatalErrors are declared like Errors, but the responder's side closes
	// the connection after sending the error answer.
	FatalErrors map[string]error
	// NoAnswer marks a command sent without _ask: no answer, no error
	// (Twisted's requiresAnswer = False).
	NoAnswer bool
}

// Command is a typed AMP command: its name on the wire, A the struct of its
// arguments and R the struct of its response (see codec.go for the tags).
// Create it with NewCommand, once, as a package variable.
type Command[A, R any] struct {
	name  string
	spec  Spec
	args  *schema
	resp  *schema
	codes []codeErr // declared errors, fatal ones flagged, in a fixed order
	hold  sync.Pool // *holder[A, R]
	pend  sync.Pool // *pendingGo[A, R]
}

// holder keeps a call's arguments and response where reflection can reach
// them without a heap allocation per call.
type holder[A, R any] struct {
	a A
	r R
}

func (c *Command[A, R]) getHolder() *holder[A, R] {
	if h, ok := c.hold.Get().(*holder[A, R]); ok {
		return h
	}
	return new(holder[A, R])
}

func (c *Command[A, R]) putHolder(h *holder[A, R]) {
	*h = holder[A, R]{} // drop references the values hold
	c.hold.Put(h)
}

type codeErr struct {
	code  string
	err   error
	fatal bool
}

// NewCommand declares a command. It panics if A or R is not a struct whose
// tagged fields all map to AMP types, so that a bad declaration fails when
// the program starts rather than on the first call.
func NewCommand[A, R any](name string, spec Spec) *Command[A, R] {
	c, err := DeclareCommand[A, R](name, spec)
	if err != nil {
		panic(err)
	}
	return c
}

// DeclareCommand is NewCommand returning the error instead of panicking.
func DeclareCommand[A, R any](name string, spec Spec) (*Command[A, R], error) {
	if name == "" || len(name) > box.MaxValueLength {
		return nil, fmt.Errorf("amp: bad command name %q", name)
	}
	args, err := schemaFor(reflect.TypeFor[A]())
	if err != nil {
		return nil, err
	}
	resp, err := schemaFor(reflect.TypeFor[R]())
	if err != nil {
		return nil, err
	}
	c := &Command[A, R]{name: name, spec: spec, args: args, resp: resp}
	for _, m := range []struct {
		codes map[string]error
		fatal bool
	}{{spec.Errors, false}, {spec.FatalErrors, true}} {
		for code, e := range m.codes {
			if code == "" || e == nil {
				return nil, fmt.Errorf("amp: command %s declares an empty error code or nil error", name)
			}
			c.codes = append(c.codes, codeErr{code: code, err: e, fatal: m.fatal})
		}
	}
	return c, nil
}

// Name returns the command's wire name.
func (c *Command[A, R]) Name() string { return c.name }

// Spec returns the command's declaration.
func (c *Command[A, R]) Spec() Spec { return c.spec }

var boxPool = sync.Pool{New: func() any { return new(box.Box) }}

func getBox() *box.Box { return boxPool.Get().(*box.Box) }

func putBox(b *box.Box) {
	b.Reset()
	boxPool.Put(b)
}

// Call sends the command with args over c and waits for its response. A
// declared error answer is a *RemoteError that errors.Is the declared
// error; an argument that cannot be encoded fails here, before anything is
// sent. For a NoAnswer command Call returns as soon as the box is queued,
// with a zero R.
func (c *Command[A, R]) Call(ctx context.Context, conn Caller, args A) (R, error) {
	var r R
	h := c.getHolder()
	defer c.putHolder(h)
	h.a = args
	req := getBox()
	defer putBox(req)
	if err := c.EncodeArgs(req, &h.a, fdsOf(conn)); err != nil {
		return r, err
	}
	if c.spec.NoAnswer {
		return r, conn.SendBox(ctx, c.name, req)
	}
	reply := getBox()
	defer putBox(reply)
	if err := conn.CallBox(ctx, c.name, req, reply); err != nil {
		return r, c.mapRemote(err)
	}
	err := c.DecodeResponse(reply, &h.r, fdsOf(conn))
	return h.r, err
}

func fdsOf(x any) FDTransport {
	t, _ := x.(FDTransport)
	return t
}

// MapError makes a *RemoteError in err match the Go error the command
// declares for its code (Call does this itself; raw calls may use it).
func (c *Command[A, R]) MapError(err error) error { return c.mapRemote(err) }

// mapRemote attaches the declared Go error to a RemoteError's code.
func (c *Command[A, R]) mapRemote(err error) error {
	var re *RemoteError
	if !errors.As(err, &re) || re.Err != nil {
		return err
	}
	for _, ce := range c.codes {
		if ce.code == re.Code {
			re.Err = ce.err
			break
		}
	}
	return err
}

// EncodeArgs writes args into b (the raw box, without _command or _ask).
func (c *Command[A, R]) EncodeArgs(b *box.Box, args *A, fds FDTransport) error {
	return c.convert(b, reflect.ValueOf(args).Elem(), fds, c.args, true)
}

// DecodeArgs reads args from a command box.
func (c *Command[A, R]) DecodeArgs(b *box.Box, args *A, fds FDTransport) error {
	return c.convert(b, reflect.ValueOf(args).Elem(), fds, c.args, false)
}

// EncodeResponse writes a response into b.
func (c *Command[A, R]) EncodeResponse(b *box.Box, resp *R, fds FDTransport) error {
	return c.convert(b, reflect.ValueOf(resp).Elem(), fds, c.resp, true)
}

// DecodeResponse reads a response from an answer box.
func (c *Command[A, R]) DecodeResponse(b *box.Box, resp *R, fds FDTransport) error {
	return c.convert(b, reflect.ValueOf(resp).Elem(), fds, c.resp, false)
}

func (c *Command[A, R]) convert(b *box.Box, v reflect.Value, fds FDTransport, s *schema, encode bool) error {
	st := getState(fds)
	defer putState(st)
	var err error
	if encode {
		err = s.encode(b, v, st)
	} else {
		err = s.decode(b, v, st)
	}
	if err != nil {
		var ae *ArgumentError
		if errors.As(err, &ae) && ae.Command == "" {
			ae.Command = c.name
		}
	}
	return err
}

// ErrorAnswer turns a responder's error into the code and description to
// answer with, following Twisted: a declared error answers with its code
// and the error's text; a *RemoteError answers as itself; anything else
// answers UNKNOWN "Unknown Error" and is fatal (Twisted drops the
// connection, since the responder failed in a way nobody planned for).
func (c *Command[A, R]) ErrorAnswer(err error) (code, description string, fatal bool) {
	for _, ce := range c.codes {
		if errors.Is(err, ce.err) {
			return ce.code, err.Error(), ce.fatal
		}
	}
	return ErrorAnswer(err)
}

// ErrorAnswer is Command.ErrorAnswer for a responder with no declared
// errors (the raw API).
func ErrorAnswer(err error) (code, description string, fatal bool) {
	var re *RemoteError
	if errors.As(err, &re) {
		return re.Code, re.Description, re.Fatal
	}
	return CodeUnknown, DescriptionUnknown, true
}
