module github.com/ampmux/ampmux/bench

go 1.26.0

require (
	github.com/ampmux/ampmux v0.0.0
	go.uber.org/goleak v1.3.0
	google.golang.org/grpc v1.85.0
)

require (
	github.com/pires/go-proxyproto v0.15.0 // indirect
	github.com/soheilhy/cmux v0.1.5 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)

replace github.com/ampmux/ampmux => ../
