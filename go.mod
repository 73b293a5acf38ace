module github.com/ampmux/ampmux

go 1.26.0

require (
	github.com/pires/go-proxyproto v0.15.0
	github.com/soheilhy/cmux v0.1.5
	github.com/stretchr/testify v1.12.1
	go.uber.org/goleak v1.3.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/kr/text v0.2.0 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
	golang.org/x/net v0.62.0 // indirect
	golang.org/x/text v0.43.0 // indirect
)
