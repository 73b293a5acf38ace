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
	srv := &conn.Server{Handler: m}
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
