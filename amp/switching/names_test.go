package switching_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampmux/ampmux/amp"
	"github.com/ampmux/ampmux/amp/box"
	"github.com/ampmux/ampmux/amp/conn"
	"github.com/ampmux/ampmux/amp/switching"
	"github.com/ampmux/ampmux/internal/pki"
)

var oidCN = asn1.ObjectIdentifier{2, 5, 4, 3}

// issueClient signs a client certificate from tmpl's names with ca.
func issueClient(t *testing.T, ca *pki.CA, subject pkix.Name, dnsNames []string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      subject,
		DNSNames:     dnsNames,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert.Cert, &key.PublicKey, ca.Key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// nameServer serves AMP with StartTLS on loopback, with serverTLS's
// certificate settings, and a registry holding "alice-only" (AllowedNames
// alice) and "anyone-plain" (plaintext allowed); both answer the client's
// PeerName and a newline, then close.
func nameServer(t *testing.T, ca *pki.CA, tweak func(*tls.Config)) string {
	t.Helper()
	srvCert, err := ca.Server("localhost", "127.0.0.1")
	require.NoError(t, err)
	tellName := func(c net.Conn, info switching.Info) {
		defer c.Close()
		name, err := switching.PeerName(info.PeerCertificate())
		if err != nil {
			name = "error: " + err.Error()
		}
		io.WriteString(c, name+"\n")
	}
	reg := switching.NewRegistry()
	reg.Register("alice-only", tellName, switching.Policy{AllowedNames: []string{"alice"}})
	reg.Register("anyone-plain", tellName, switching.Policy{AllowPlaintext: true})
	m := amp.NewMux()
	reg.Install(m)
	cfg := &tls.Config{
		Certificates: []tls.Certificate{srvCert.TLS()},
		ClientCAs:    ca.Pool(),
		ClientAuth:   tls.VerifyClientCertIfGiven,
	}
	if tweak != nil {
		tweak(cfg)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := &conn.Server{Config: conn.Config{Handler: m, Logger: quiet(), TLS: cfg}}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	return strings.TrimSuffix(line, "\n")
}

// AllowedNames over a real StartTLS: DNS SANs when there are any (the CN
// ignored), else the single CN; several CNs are refused, whichever of
// them is allowed.
func TestAllowedNamesOverStartTLS(t *testing.T) {
	ca, err := pki.NewCA("names CA")
	require.NoError(t, err)
	addr := nameServer(t, ca, nil)
	twoCNs := pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		{Type: oidCN, Value: "bob"}, {Type: oidCN, Value: "alice"},
	}}
	tests := []struct {
		name     string
		subject  pkix.Name
		dnsNames []string
		want     string // PeerName as the handler sees it; "" means refused
		reason   string // in the FORBIDDEN description
	}{
		{"SAN matches", pkix.Name{CommonName: "someone"}, []string{"alice"}, "alice", ""},
		{"second SAN matches, first is the name", pkix.Name{CommonName: "someone"}, []string{"www", "alice"}, "www", ""},
		{"CN ignored when there are SANs", pkix.Name{CommonName: "alice"}, []string{"bob"}, "", `DNS names ["bob"] are not allowed`},
		{"single CN without SANs", pkix.Name{CommonName: "alice"}, nil, "alice", ""},
		{"single CN without SANs, not allowed", pkix.Name{CommonName: "bob"}, nil, "", `common name "bob" is not allowed`},
		{"several CNs", twoCNs, nil, "", `several common names: ["bob" "alice"]`},
		{"several CNs, with an allowed SAN", twoCNs, []string{"alice"}, "", "several common names"},
		{"no name at all", pkix.Name{Organization: []string{"nobody"}}, nil, "", "has no name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := issueClient(t, ca, tt.subject, tt.dnsNames)
			if tt.subject.ExtraNames != nil {
				require.Equal(t, "alice", cert.Leaf.Subject.CommonName,
					"crypto/x509 keeps the last CN: the one the old check admitted")
			}
			cfg := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}}
			c, err := switching.Dial(ctxT(t), addr, "alice-only", cfg)
			if tt.want == "" {
				require.Nil(t, c)
				require.ErrorIs(t, err, switching.ErrForbidden)
				var re *amp.RemoteError
				require.ErrorAs(t, err, &re)
				require.Equal(t, switching.CodeForbidden, re.Code)
				require.Contains(t, re.Description, tt.reason)
				require.Equal(t, 1, strings.Count(re.Description, "switching:"), "one prefix: %s", re.Description)
				return
			}
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			require.Equal(t, tt.want, readLine(t, c))
		})
	}
}

func TestPeerName(t *testing.T) {
	ca, err := pki.NewCA("names CA")
	require.NoError(t, err)
	tests := []struct {
		name     string
		subject  pkix.Name
		dnsNames []string
		want     string
		is       error
	}{
		{"first DNS SAN", pkix.Name{CommonName: "cn"}, []string{"a.example", "b.example"}, "a.example", nil},
		{"single CN", pkix.Name{CommonName: "cn"}, nil, "cn", nil},
		{"several CNs", pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidCN, Value: "x"}, {Type: oidCN, Value: "y"}}}, nil, "", switching.ErrSeveralCommonNames},
		{"several CNs and a SAN", pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidCN, Value: "x"}, {Type: oidCN, Value: "y"}}}, []string{"a.example"}, "", switching.ErrSeveralCommonNames},
		{"no name", pkix.Name{Organization: []string{"o"}}, nil, "", switching.ErrNoPeerName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := switching.PeerName(issueClient(t, ca, tt.subject, tt.dnsNames).Leaf)
			if tt.is != nil {
				require.ErrorIs(t, err, tt.is)
				require.True(t, strings.HasPrefix(err.Error(), "switching: "), err.Error())
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
	_, err = switching.PeerName(nil)
	require.ErrorIs(t, err, switching.ErrNoPeerName)
}

// TLS 1.1 is refused both ways: a Dialer does not offer it whatever its
// config says, a default server does not accept it, and a Registry behind
// a server configured to accept it refuses the switch unless the policy
// allows plaintext anyway.
func TestTLSMinimumVersion(t *testing.T) {
	ca, err := pki.NewCA("versions CA")
	require.NoError(t, err)
	alice, err := ca.Client("alice")
	require.NoError(t, err)
	clientCfg := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{alice.TLS()}}
	oldOnly := func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 }
	oldToo := func(c *tls.Config) { c.MinVersion = tls.VersionTLS10 }

	t.Run("Dial does not offer TLS 1.1", func(t *testing.T) {
		addr := nameServer(t, ca, oldOnly)
		for _, cfg := range []*tls.Config{clientCfg, func() *tls.Config {
			c := clientCfg.Clone()
			c.MinVersion = tls.VersionTLS10
			return c
		}()} {
			min := cfg.MinVersion
			c, err := switching.Dial(ctxT(t), addr, "alice-only", cfg)
			require.Nil(t, c)
			var de *switching.DialError
			require.ErrorAs(t, err, &de)
			require.Equal(t, switching.StepStartTLS, de.Step, "%v", err)
			require.Equal(t, min, cfg.MinVersion, "the caller's config is not modified")
		}
	})

	// An AMP client with its own TLS 1.1-only config, underneath Dialer.
	oldClient := func(t *testing.T, addr string) (*conn.Conn, error) {
		c, err := conn.Dial(ctxT(t), "tcp", addr, &conn.Config{Logger: quiet()})
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		cfg := clientCfg.Clone()
		cfg.ServerName = "localhost"
		oldOnly(cfg)
		return c, c.StartTLS(ctxT(t), cfg)
	}
	t.Run("default server refuses a TLS 1.1 client", func(t *testing.T) {
		_, err := oldClient(t, nameServer(t, ca, nil))
		var te *conn.TLSError
		require.ErrorAs(t, err, &te)
	})
	t.Run("registry refuses a switch over TLS 1.1", func(t *testing.T) {
		c, err := oldClient(t, nameServer(t, ca, oldToo))
		require.NoError(t, err, "this server accepts TLS 1.1")
		st, ok := c.ConnectionState()
		require.True(t, ok)
		require.Equal(t, uint16(tls.VersionTLS11), st.Version)

		r, err := switching.ListProtocols.Call(ctxT(t), c, struct{}{})
		require.NoError(t, err)
		require.Equal(t, []string{"anyone-plain"}, r.Protocols)
		_, err = switching.ProtocolSwitch.Call(ctxT(t), c, switching.SwitchArgs{Protocol: []byte("alice-only")})
		require.ErrorIs(t, err, switching.ErrTLSRequired)
		require.Contains(t, err.Error(), "TLS 1.2 or later")
		// AMP still works after the refusal, and a policy that would take
		// plaintext takes old TLS.
		inner, err := switchTo(t, c, "anyone-plain")
		require.NoError(t, err)
		t.Cleanup(func() { inner.Close() })
		require.Equal(t, "alice", readLine(t, inner))
	})
}

func switchTo(t *testing.T, c *conn.Conn, protocol string) (net.Conn, error) {
	t.Helper()
	var args box.Box
	args.SetString("protocol", protocol)
	inner, err := c.Switch(ctxT(t), switching.CommandProtocolSwitch, &args)
	if err != nil {
		return nil, switching.ProtocolSwitch.MapError(err)
	}
	return inner, nil
}
