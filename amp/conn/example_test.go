package conn_test

import (
	"context"
	"fmt"
	"net"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
)

func Example() {
	m := amp.NewMux()
	m.HandleBoxInline("Hello", func(_ context.Context, req, resp *box.Box) error {
		resp.SetString("greeting", "hello, "+req.GetString("name"))
		return nil
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &conn.Server{Config: conn.Config{Handler: m}}
	go srv.Serve(l)
	defer srv.Close()

	ctx := context.Background()
	c, err := conn.Dial(ctx, "tcp", l.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	reply, err := c.Call(ctx, "Hello", box.FromMap(map[string]string{"name": "twisted"}))
	fmt.Println(reply.GetString("greeting"), err)
	// Output: hello, twisted <nil>
}

// Go keeps many calls in flight from one goroutine: each answer goes to a
// callback on the connection's reader goroutine.
func ExampleConn_Go() {
	m := amp.NewMux()
	m.HandleBoxInline("Double", func(_ context.Context, req, resp *box.Box) error {
		resp.SetString("twice", req.GetString("n")+req.GetString("n"))
		return nil
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	srv := &conn.Server{Config: conn.Config{Handler: m}}
	go srv.Serve(l)
	defer srv.Close()

	ctx := context.Background()
	c, err := conn.Dial(ctx, "tcp", l.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	answers := make(chan string, 3)
	for _, n := range []string{"a", "b", "c"} {
		err := c.Go(ctx, "Double", box.FromMap(map[string]string{"n": n}), func(_ context.Context, reply *box.Box, err error) {
			// On the reader goroutine: copy what is kept, never block.
			if err != nil {
				answers <- err.Error()
				return
			}
			answers <- reply.GetString("twice")
		})
		if err != nil {
			panic(err)
		}
	}
	got := map[string]bool{}
	for range 3 {
		got[<-answers] = true
	}
	fmt.Println(got["aa"], got["bb"], got["cc"])
	// Output: true true true
}
