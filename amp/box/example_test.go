package box_test

import (
	"bytes"
	"fmt"

	"github.com/ampmux/ampmux/amp/box"
)

func Example() {
	var b box.Box
	b.SetString("_command", "Sum")
	b.SetString("a", "13")
	wire, err := box.Append(nil, &b)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%q\n", wire)

	d := box.NewDecoder(bytes.NewReader(wire))
	var got box.Box
	if err := d.Decode(&got); err != nil {
		panic(err)
	}
	fmt.Println(got.GetString("_command"), got.GetString("a"))
	// Output:
	// "\x00\b_command\x00\x03Sum\x00\x01a\x00\x0213\x00\x00"
	// Sum 13
}
