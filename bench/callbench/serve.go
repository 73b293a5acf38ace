package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/internal/benchkit"
)

func typedSum(_ context.Context, a benchkit.SumArgs) (benchkit.SumReply, error) {
	return benchkit.SumReply{Total: a.A + a.B}, nil
}

func checkAPI(api string) error {
	if api != "raw" && api != "typed" && api != "async" {
		return fmt.Errorf("-api must be raw, typed or async, not %q", api)
	}
	return nil
}

// newAMPMux returns the Sum responder for api, run inline on the reader.
func newAMPMux(api string) (*amp.Mux, error) {
	if err := checkAPI(api); err != nil {
		return nil, err
	}
	m := amp.NewMux()
	if api == "raw" || api == "async" { // async is a client API; its server is raw
		m.HandleBoxInline("Sum", benchkit.RawSum)
	} else {
		amp.HandleInline(m, benchkit.Sum, typedSum)
	}
	return m, nil
}

// startAMPServer serves AMP on l until the returned server is closed.
func startAMPServer(l net.Listener, api string) (io.Closer, error) {
	m, err := newAMPMux(api)
	if err != nil {
		return nil, err
	}
	srv := &conn.Server{Config: conn.Config{Handler: m}}
	go srv.Serve(l)
	return srv, nil
}

// Wire sizes of the floor: a Sum call box with a 5-digit tag, and its
// answer. Built with the codec so that they are the real bytes.
const (
	floorReqSize  = 44
	floorRespSize = 29
)

var floorReq, floorResp = func() ([]byte, []byte) {
	q, r := benchkit.FloorMessages()
	if len(q) != floorReqSize || len(r) != floorRespSize {
		panic(fmt.Sprintf("callbench: floor messages are %d and %d bytes", len(q), len(r)))
	}
	return q, r
}()

const floorBufSize = 64 << 10

// floorServer answers every complete 44-byte request with a 29-byte
// response: one Read of whatever is there, one Write of all its answers.
type floorServer struct{ *benchkit.ConnServer }

func startFloorServer(l net.Listener) floorServer {
	return floorServer{benchkit.ServeConns(l, serveFloor)}
}

func serveFloor(nc net.Conn) {
	buf := make([]byte, floorBufSize)
	out := bytes.Repeat(floorResp, floorBufSize/floorReqSize+1)
	partial := 0 // bytes of a request not yet complete
	for {
		n, err := nc.Read(buf)
		if n > 0 {
			total := partial + n
			k := total / floorReqSize
			partial = total % floorReqSize
			if k > 0 {
				if _, werr := nc.Write(out[:k*floorRespSize]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// serveMain runs serve-amp or serve-floor until stdin closes or ctx ends.
func serveMain(ctx context.Context, cmd string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "address to listen on")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the server's whole life to `file`")
	api := "raw"
	if cmd == "serve-amp" {
		fs.StringVar(&api, "api", "raw", "responder: raw (box API, HandleBoxInline) or typed (Command, HandleInline)")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkAPI(api); err != nil {
		return err
	}
	stopProfile, err := benchkit.StartCPUProfile(*cpuprofile)
	if err != nil {
		return err
	}
	defer stopProfile()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	var srv io.Closer
	if cmd == "serve-amp" {
		if srv, err = startAMPServer(l, api); err != nil {
			l.Close()
			return err
		}
	} else {
		srv = startFloorServer(l)
	}
	err = benchkit.Announce(ctx, stdout, stdin, l.Addr(), nil)
	return errors.Join(err, srv.Close())
}
