package mux_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/mux"
)

type GreetArgs struct {
	Name string `amp:"name"`
}

type GreetReply struct {
	Greeting string `amp:"greeting"`
}

var Greet = amp.NewCommand[GreetArgs, GreetReply]("Greet", amp.Spec{})

// One port serves AMP and HTTP: the mux tells clients apart by their
// first bytes and runs both servers.
func Example() {
	m := amp.NewMux()
	amp.HandleInline(m, Greet, func(_ context.Context, a GreetArgs) (GreetReply, error) {
		return GreetReply{Greeting: "hello, " + a.Name}, nil
	})
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello over %s", r.Proto)
	})}

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	s := mux.New(l, mux.Config{
		AMP:  &conn.Server{Config: conn.Config{Handler: m}},
		HTTP: web,
	})
	go s.Serve()
	defer s.Close()
	addr := s.Addr().String()

	ctx := context.Background()
	c, err := conn.Dial(ctx, "tcp", addr, nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	reply, err := Greet.Call(ctx, c, GreetArgs{Name: "twisted"})
	fmt.Println(reply.Greeting, err)

	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(string(body))
	// Output:
	// hello, twisted <nil>
	// hello over HTTP/1.1
}
