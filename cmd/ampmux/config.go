package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/ampmux/ampmux/internal/tunnel"
)

// serveConfig is everything serve takes, from --config and flags.
type serveConfig struct {
	Listen         string        `yaml:"listen"`
	TLSCert        string        `yaml:"tls_cert"`
	TLSKey         string        `yaml:"tls_key"`
	ClientCA       string        `yaml:"client_ca"`
	AllowPlaintext bool          `yaml:"allow_plaintext"`
	HTTPBackend    string        `yaml:"http_backend"`
	HTTPDir        string        `yaml:"http_dir"`
	Demo           bool          `yaml:"demo"`
	LogFormat      string        `yaml:"log_format"`
	Grace          time.Duration `yaml:"grace"`
	SniffTimeout   time.Duration `yaml:"sniff_timeout"`
	AllowAnonymous bool          `yaml:"allow_anonymous"`
	Admin          string        `yaml:"admin"`
	PublicStatus   bool          `yaml:"public_status"`
	// NoAccessLog turns off the lines per tunnel and per AMP connection.
	NoAccessLog bool `yaml:"no_access_log"`
	// ProxyFrom are the load balancers (CIDRs or addresses) whose PROXY
	// protocol headers name the client.
	ProxyFrom []string `yaml:"proxy_from"`
	// SendProxy names the routes whose backends get a PROXY v2 header
	// (the flags' way of setting routes' send_proxy).
	SendProxy []string `yaml:"-"`
	// reload, if set, builds the configuration again (SIGHUP).
	reload func() (*serveConfig, error)
	Limits limitsConfig   `yaml:"limits"`
	Routes []routeConfig  `yaml:"routes"`
	Expose []exposeConfig `yaml:"expose"`
}

// exposeConfig is a route published by agents (ampmux expose) rather than
// dialled by the gateway.
type exposeConfig struct {
	Name         string        `yaml:"name"`
	Publishers   []string      `yaml:"publishers"`    // certificate names that may publish it
	AllowedNames []string      `yaml:"allowed_names"` // clients that may use it (empty: any verified)
	IdleTimeout  time.Duration `yaml:"idle_timeout"`
}

// limitsConfig bounds what clients may take; each has a flag of the same
// name with dashes (max_conns is --max-conns) and a counter on the
// status page. Zero means the default, which is in --help.
type limitsConfig struct {
	MaxConns             int           `yaml:"max_conns"`
	MaxConnsPerSource    int           `yaml:"max_conns_per_source"`
	MaxSniffingPerSource int           `yaml:"max_sniffing_per_source"`
	MaxTunnelsPerRoute   int           `yaml:"max_tunnels_per_route"`
	MaxTunnelsPerClient  int           `yaml:"max_tunnels_per_client"`
	MaxCallsPerConn      int           `yaml:"max_calls_per_conn"`
	MaxBoxSize           byteSize      `yaml:"max_box_size"`
	MaxFields            int           `yaml:"max_fields"`
	UnauthBuffer         byteSize      `yaml:"unauthenticated_buffer"`
	WriteBuffer          byteSize      `yaml:"write_buffer"`
	WriteTimeout         time.Duration `yaml:"write_timeout"`
	Heartbeat            time.Duration `yaml:"heartbeat"`
	HeartbeatTimeout     time.Duration `yaml:"heartbeat_timeout"`
	HalfCloseTimeout     time.Duration `yaml:"half_close_timeout"`
	TunnelIdleTimeout    time.Duration `yaml:"tunnel_idle_timeout"`
}

// routeConfig is one inner protocol piped to a TCP backend.
type routeConfig struct {
	Name           string   `yaml:"name"`
	Backend        string   `yaml:"backend"`
	AllowedNames   []string `yaml:"allowed_names"` // client certificate CN or DNS SAN
	AllowPlaintext bool     `yaml:"allow_plaintext"`
	// IdleTimeout, if set, closes this route's tunnels after that long
	// with no bytes either way (overrides limits.tunnel_idle_timeout).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// SendProxy, "v1" or "v2", starts each connection to the backend with
	// a PROXY protocol header naming the client ("": none).
	SendProxy string `yaml:"send_proxy"`
	// Publishers, for an exposed route, are who may publish it; it has no
	// Backend then.
	Publishers []string `yaml:"-"`
	line       int
}

func defaultServeConfig() serveConfig {
	return serveConfig{Listen: "127.0.0.1:7443", LogFormat: "text", Grace: 10 * time.Second, SniffTimeout: 5 * time.Second,
		Limits: defaultLimits()}
}

// defaultLimits are serve's limits; docs/security.md says why each.
func defaultLimits() limitsConfig {
	return limitsConfig{
		MaxConnsPerSource:    1024,
		MaxSniffingPerSource: 256,
		MaxTunnelsPerRoute:   4096,
		MaxTunnelsPerClient:  256,
		MaxCallsPerConn:      1024,
		MaxBoxSize:           1 << 20,
		MaxFields:            1024,
		UnauthBuffer:         64 << 20,
		WriteBuffer:          4 << 20,
		WriteTimeout:         30 * time.Second,
		Heartbeat:            30 * time.Second,
		HeartbeatTimeout:     15 * time.Second,
		HalfCloseTimeout:     tunnel.DefaultHalfCloseTimeout,
	}
}

// configError names the file and line of a mistake.
type configError struct {
	file string
	line int
	msg  string
}

func (e *configError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.file, e.line, e.msg)
	}
	return fmt.Sprintf("%s: %s", e.file, e.msg)
}

// loadConfigFile reads YAML into cfg: unknown keys are errors, and every
// error names its line.
func loadConfigFile(path string, cfg *serveConfig) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, errEOF) || err.Error() == "EOF" {
			return nil // an empty file
		}
		return yamlError(path, err)
	}
	for i := range cfg.Routes {
		if err := cfg.Routes[i].validate(); err != nil {
			return &configError{file: path, line: cfg.Routes[i].line, msg: err.Error()}
		}
	}
	return nil
}

var errEOF = errors.New("EOF")

// yamlError turns yaml.v3's "yaml: line 3: ..." into "file:3: ...".
func yamlError(path string, err error) error {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) {
		msg = strings.Join(te.Errors, "; ")
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	var line int
	if n, _ := fmt.Sscanf(msg, "line %d:", &line); n == 1 {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
		return &configError{file: path, line: line, msg: msg}
	}
	return &configError{file: path, msg: msg}
}

// UnmarshalYAML records the route's line for later errors.
func (r *routeConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: a route is a mapping with name and backend", n.Line)
	}
	allowed := map[string]bool{"name": true, "backend": true, "allowed_names": true, "allow_plaintext": true, "idle_timeout": true}
	for i := 0; i < len(n.Content); i += 2 {
		if k := n.Content[i]; !allowed[k.Value] {
			return fmt.Errorf("line %d: unknown route key %q (known: name, backend, allowed_names, allow_plaintext, idle_timeout)", k.Line, k.Value)
		}
	}
	type plain routeConfig
	if err := n.Decode((*plain)(r)); err != nil {
		return err
	}
	r.line = n.Line
	return nil
}

func (r *routeConfig) validate() error {
	if r.Name == "" {
		return errors.New("route without a name")
	}
	if strings.ContainsAny(r.Name, " \t=") {
		return fmt.Errorf("route name %q may not contain spaces or '='", r.Name)
	}
	if _, _, err := net.SplitHostPort(r.Backend); err != nil {
		return fmt.Errorf("route %q: backend %q is not HOST:PORT", r.Name, r.Backend)
	}
	return nil
}

// parseExposeFlag reads --expose NAME=PUBLISHER.
func parseExposeFlag(s string) (exposeConfig, error) {
	name, pub, ok := strings.Cut(s, "=")
	if !ok || name == "" || pub == "" || strings.ContainsAny(name, " \t=") {
		return exposeConfig{}, usagef("--expose %q: want NAME=PUBLISHER (the publisher's certificate name)", s)
	}
	return exposeConfig{Name: name, Publishers: []string{pub}}, nil
}

// exposedRoutes turns expose entries into routes, one per name (the
// same name given twice gathers its publishers).
func exposedRoutes(exps []exposeConfig) ([]routeConfig, error) {
	var out []routeConfig
	idx := map[string]int{}
	for _, x := range exps {
		if x.Name == "" || len(x.Publishers) == 0 {
			return nil, fmt.Errorf("expose %q: needs a name and publishers", x.Name)
		}
		if i, ok := idx[x.Name]; ok {
			out[i].Publishers = append(out[i].Publishers, x.Publishers...)
			out[i].AllowedNames = append(out[i].AllowedNames, x.AllowedNames...)
			continue
		}
		idx[x.Name] = len(out)
		out = append(out, routeConfig{Name: x.Name, Publishers: x.Publishers, AllowedNames: x.AllowedNames, IdleTimeout: x.IdleTimeout})
	}
	return out, nil
}

// parseRouteFlag reads --route NAME=HOST:PORT.
func parseRouteFlag(s string) (routeConfig, error) {
	name, backend, ok := strings.Cut(s, "=")
	r := routeConfig{Name: name, Backend: backend}
	if !ok {
		return r, usagef("--route %q: want NAME=HOST:PORT", s)
	}
	if err := r.validate(); err != nil {
		return r, usagef("--route: %v", err)
	}
	return r, nil
}
