package conn

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
)

// dispatch handles one box on the reader goroutine. b aliases the read
// buffer. An error is the peer's fault and ends the connection.
func (c *Conn) dispatch(b *box.Box) error {
	if tag, ok := b.Get(amp.KeyAnswer); ok {
		return c.answered(tag, b, false)
	}
	if tag, ok := b.Get(amp.KeyError); ok {
		return c.answered(tag, b, true)
	}
	if name, ok := b.Get(amp.KeyCommand); ok {
		return c.command(name, b)
	}
	return &ProtocolError{Box: b.String(), Err: ErrEmptyBox}
}

// answered completes the call with tag. Our tags are hex counters; an
// answer with any other tag answers nothing we asked.
func (c *Conn) answered(tagBytes []byte, b *box.Box, isErr bool) error {
	tag, perr := strconv.ParseUint(string(tagBytes), 16, 64)
	if perr == nil && tag&probeTag != 0 {
		c.probeAnswered(tag)
		return nil
	}
	c.pmu.Lock()
	cl, ok := c.pending.lookup(tag)
	if ok && perr == nil {
		c.pending.remove(tag)
	}
	c.pmu.Unlock()
	if !ok || perr != nil {
		return &ProtocolError{Box: b.String(), Err: ErrUnknownTag}
	}
	if cl == nil {
		return nil // cancelled by its caller: drop the late answer
	}
	if cl.cb != nil {
		if isErr {
			c.deliver(cl, nil, remoteError(b))
		} else {
			c.deliver(cl, b, nil)
		}
		return nil
	}
	if isErr {
		cl.err = remoteError(b)
	} else if cl.reply != nil {
		cl.reply.CopyFrom(b)
	}
	var herr error
	if cl.after != nil {
		herr = cl.after(isErr)
		if herr != nil && cl.err == nil {
			cl.err = herr
		}
	}
	if cl.after == nil {
		cl.counted = true
		c.waking.Add(1)
	}
	cl.done <- struct{}{}
	return herr
}

func remoteError(b *box.Box) error {
	code, ok := b.Get(amp.KeyErrorCode)
	if !ok {
		return &ProtocolError{Box: b.String(), Err: ErrMalformedError}
	}
	desc, _ := b.Get(amp.KeyErrorDescription)
	e := &amp.RemoteError{Code: string(code), Description: decodeReplace(desc)}
	switch e.Code {
	case amp.CodeUnhandled:
		e.Err = amp.ErrUnhandledCommand
	case amp.CodeUnknown:
		e.Err = amp.ErrUnknownRemote
	case CodeOverloaded:
		e.Err = ErrOverloaded
	}
	return e
}

// decodeReplace decodes UTF-8 replacing bad bytes, as Twisted decodes
// error descriptions.
func decodeReplace(p []byte) string {
	if utf8.Valid(p) {
		return string(p)
	}
	return strings.ToValidUTF8(string(p), "\uFFFD")
}

func (c *Conn) command(name []byte, req *box.Box) error {
	if c.ended.Load() {
		// Closing: as Twisted stops reading on loseConnection, no command
		// runs now that its answer could not be sent.
		return nil
	}
	ask, hasAsk := req.Get(amp.KeyAsk)
	switch string(name) {
	case StartTLSCommand:
		return c.serveStartTLS(ask, hasAsk)
	case HeartbeatCommand:
		return c.serveHeartbeat(ask, hasAsk)
	}
	var r *amp.Responder
	if c.cfg.Handler != nil {
		r = c.cfg.Handler.Responder(name)
	}
	if r == nil {
		if !hasAsk {
			return nil
		}
		return c.answerError(ask, amp.CodeUnhandled, "Unhandled Command: "+pyBytesRepr(name), true)
	}
	c.active.Add(1)
	if r.Inline {
		return c.serveInline(r, name, req, ask, hasAsk)
	}
	return c.startHandler(r, req, hasAsk)
}

// serveInline runs an inline responder on the reader goroutine, then
// switches if it asked to, and answers.
func (c *Conn) serveInline(r *amp.Responder, name []byte, req *box.Box, ask []byte, hasAsk bool) error {
	resp := &c.rd.inlineResp
	resp.Reset()
	c.inline.onReader.Store(true)
	c.inline.responding.Store(true)
	err := r.Serve(c.inlineCtx, req, resp)
	c.inline.responding.Store(false)
	c.inline.onReader.Store(false)
	if serve := c.inline.switchTo.Swap(nil); serve != nil {
		switch {
		case !hasAsk:
			// Nobody would know the switch happened: refuse it, and let
			// serve release what the responder prepared.
			c.active.Add(-1)
			go (*serve)(nil)
			return &ProtocolError{Box: req.String(), Err: ErrSwitchWithoutAsk}
		case err == nil:
			c.active.Add(-1)
			return c.switchAfter(ask, resp, *serve)
		default:
			go (*serve)(nil)
		}
	}
	c.finishCommand(r, name, ask, hasAsk, resp, err, true)
	trimBox(resp)
	return nil
}

// finishCommand sends the answer or error answer for one command.
func (c *Conn) finishCommand(r *amp.Responder, name, ask []byte, hasAsk bool, resp *box.Box, err error, fromReader bool) {
	defer c.active.Add(-1)
	if err == nil {
		if !hasAsk {
			return
		}
		resp.Set(amp.KeyAnswer, ask)
		if qerr := c.queueAnswer(resp, fromReader); qerr != nil {
			// The response broke the wire limits: that is the responder's
			// bug, so answer as Twisted does for a bad local return.
			c.reportAnswerFailure(name, qerr)
			if hasAsk {
				c.answerErrorFrom(ask, amp.CodeUnknown, amp.DescriptionUnknown, true, fromReader)
			}
		}
		return
	}
	code, desc, fatal := r.Answer(err)
	if code == amp.CodeUnknown && desc == amp.DescriptionUnknown && !c.ended.Load() {
		c.cfg.Logger.Error("amp: responder failed with an undeclared error", "command", string(name), "remote", c.nc.RemoteAddr(), "err", err)
	}
	if !hasAsk {
		if fatal {
			c.closeAfterFlush(fmt.Errorf("conn: fatal error in %s: %w", name, err))
		}
		return
	}
	c.answerErrorFrom(ask, code, desc, fatal, fromReader)
}

func (c *Conn) reportAnswerFailure(name []byte, err error) {
	if c.ended.Load() {
		return // the connection is going away; nothing to report
	}
	c.cfg.Logger.Error("amp: cannot send answer", "command", string(name), "remote", c.nc.RemoteAddr(), "err", err)
}

func (c *Conn) answerError(ask []byte, code, desc string, fromReader bool) error {
	c.answerErrorFrom(ask, code, desc, false, fromReader)
	return nil
}

func (c *Conn) answerErrorFrom(ask []byte, code, desc string, fatal, fromReader bool) {
	var b *box.Box
	if fromReader {
		b = &c.rd.errBox
		b.Reset()
	} else {
		b = getBox()
		defer putBox(b)
	}
	b.Set(amp.KeyError, ask)
	b.SetString(amp.KeyErrorCode, code)
	if len(desc) > box.MaxValueLength {
		desc = desc[:box.MaxValueLength]
	}
	b.SetString(amp.KeyErrorDescription, desc)
	if err := c.queueAnswer(b, fromReader); err != nil {
		c.reportAnswerFailure(nil, err)
	}
	if fatal {
		c.closeAfterFlush(&amp.RemoteError{Code: code, Description: desc, Fatal: true})
	}
}

// pyBytesRepr renders b as Python's repr(bytes) does, so that UNHANDLED
// descriptions read as Twisted's do.
func pyBytesRepr(b []byte) string {
	quote := byte('\'')
	if strings.IndexByte(string(b), '\'') >= 0 && strings.IndexByte(string(b), '"') < 0 {
		quote = '"'
	}
	var sb strings.Builder
	sb.WriteString("b")
	sb.WriteByte(quote)
	for _, ch := range b {
		switch {
		case ch == quote || ch == '\\':
			sb.WriteByte('\\')
			sb.WriteByte(ch)
		case ch == '\t':
			sb.WriteString(`\t`)
		case ch == '\n':
			sb.WriteString(`\n`)
		case ch == '\r':
			sb.WriteString(`\r`)
		case ch < 0x20 || ch >= 0x7f:
			fmt.Fprintf(&sb, `\x%02x`, ch)
		default:
			sb.WriteByte(ch)
		}
	}
	sb.WriteByte(quote)
	return sb.String()
}

var boxPool = newBoxPool()

// keepBox is the most storage a box may hold to be kept for reuse (in the
// pool, or as one of the reader's boxes): one large box leaves no large
// buffer behind it.
const keepBox = 64 << 10

func getBox() *box.Box { return boxPool.Get().(*box.Box) }

func putBox(b *box.Box) {
	if b.Footprint() > keepBox {
		return
	}
	b.Reset()
	boxPool.Put(b)
}

// trimBox empties one of the reader's boxes, dropping its storage if it
// grew large.
func trimBox(b *box.Box) {
	if b.Footprint() > keepBox {
		*b = box.Box{}
	}
}
