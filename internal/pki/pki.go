// Package pki makes a small development PKI: a CA, a server certificate
// and client certificates signed by it, as PEM that Go, OpenSSL and
// Twisted (pyOpenSSL) all load. Tests use it, and so does `ampmux cert`.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Cert is a certificate with its key.
type Cert struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	DER  []byte
}

// CertPEM and KeyPEM encode the certificate and its key (PKCS#8).
func (c *Cert) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.DER})
}

func (c *Cert) KeyPEM() []byte {
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		panic(err) // ECDSA keys always marshal
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// TLS returns the pair for tls.Config.Certificates.
func (c *Cert) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.DER}, PrivateKey: c.Key, Leaf: c.Cert}
}

// CA signs certificates.
type CA struct{ Cert }

// NewCA makes a self-signed CA named name, valid for ten years.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"ampmux development CA"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert{Cert: cert, Key: key, DER: der}}, nil
}

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert.Cert)
	return p
}

// Server issues a server certificate for hosts (DNS names or IPs).
func (ca *CA) Server(hosts ...string) (*Cert, error) {
	tmpl := leafTemplate(hosts[0], x509.ExtKeyUsageServerAuth)
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl)
}

// Client issues a client certificate with common name cn (also a DNS SAN,
// so that name checks can use either).
func (ca *CA) Client(cn string) (*Cert, error) {
	tmpl := leafTemplate(cn, x509.ExtKeyUsageClientAuth)
	tmpl.DNSNames = []string{cn}
	return ca.issue(tmpl)
}

func leafTemplate(cn string, usage x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"ampmux development"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
}

func (ca *CA) issue(tmpl *x509.Certificate) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Cert{Cert: cert, Key: key, DER: der}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		panic(err)
	}
	return n
}

// Bundle is what `ampmux cert` writes: a CA, a server and a client.
type Bundle struct {
	CA     *CA
	Server *Cert
	Client *Cert
}

// DefaultHosts are always in the server certificate.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// NewBundle makes a CA, a server certificate for DefaultHosts plus hosts,
// and a client certificate named "client".
func NewBundle(hosts ...string) (*Bundle, error) {
	ca, err := NewCA("ampmux development CA")
	if err != nil {
		return nil, err
	}
	all := append(append([]string{}, DefaultHosts...), hosts...)
	srv, err := ca.Server(all...)
	if err != nil {
		return nil, err
	}
	cli, err := ca.Client("client")
	if err != nil {
		return nil, err
	}
	return &Bundle{CA: ca, Server: srv, Client: cli}, nil
}

// Files written by Bundle.Write.
const (
	CAFile         = "ca.pem"
	CAKeyFile      = "ca-key.pem"
	ServerFile     = "server.pem"
	ServerKeyFile  = "server-key.pem"
	ClientFile     = "client.pem"
	ClientKeyFile  = "client-key.pem"
	keyPermissions = 0o600
)

// Write puts the bundle in dir as PEM files; keys get mode 0600.
func (b *Bundle) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{CAFile, b.CA.CertPEM(), 0o644},
		{CAKeyFile, b.CA.KeyPEM(), keyPermissions},
		{ServerFile, b.Server.CertPEM(), 0o644},
		{ServerKeyFile, b.Server.KeyPEM(), keyPermissions},
		{ClientFile, b.Client.CertPEM(), 0o644},
		{ClientKeyFile, b.Client.KeyPEM(), keyPermissions},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, f.data, f.mode); err != nil {
			return fmt.Errorf("pki: %w", err)
		}
		if err := os.Chmod(p, f.mode); err != nil { // WriteFile keeps an old file's mode
			return fmt.Errorf("pki: %w", err)
		}
	}
	return nil
}

// LoadCA reads a CA written by Bundle.Write from dir (ca.pem, ca-key.pem).
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w (the CA key is needed to sign)", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pki: %s holds no PEM certificate", CAFile)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", CAFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("pki: %s is not a CA certificate", CAFile)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("pki: %s holds no PEM key", CAKeyFile)
	}
	key, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", CAKeyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki: %s is not a signing key", CAKeyFile)
	}
	if pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("pki: %s does not match %s", CAKeyFile, CAFile)
	}
	return &CA{Cert{Cert: cert, Key: signer, DER: cb.Bytes}}, nil
}

// WriteClient writes c as NAME.pem and NAME-key.pem (mode 0600) in dir.
func WriteClient(dir, name string, c *Cert) error {
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{filepath.Join(dir, name+".pem"), c.CertPEM(), 0o644},
		{filepath.Join(dir, name+"-key.pem"), c.KeyPEM(), keyPermissions},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return fmt.Errorf("pki: %w", err)
		}
		if err := os.Chmod(f.path, f.mode); err != nil {
			return fmt.Errorf("pki: %w", err)
		}
	}
	return nil
}
