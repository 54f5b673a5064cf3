package pushtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// OIDUserID is the subject attribute (UID, 0.9.2342.19200300.100.1.1) in
// which Apple push certificates name their bundle id.
var OIDUserID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}

// OIDAppleTopics is the extension (1.2.840.113635.100.6.3.6) in which
// Apple's universal push certificates list the topics they serve.
var OIDAppleTopics = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 6}

// CA is a throwaway certificate authority: it signs the fakes' server
// certificates (for 127.0.0.1, ::1 and localhost) and APNs client
// certificates. Clients trust it through the file WriteFile writes.
type CA struct {
	// Cert is the CA certificate.
	Cert *x509.Certificate
	// PEM is Cert PEM-encoded.
	PEM  []byte
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var serial atomic.Int64

func nextSerial() *big.Int { return big.NewInt(time.Now().UnixNano() + serial.Add(1)) }

// NewCA generates a CA valid for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("pushtest: ca key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          nextSerial(),
		Subject:               pkix.Name{CommonName: "sipwake pushtest CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("pushtest: ca cert: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("pushtest: ca cert: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{
		Cert: cert,
		PEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:  key,
		pool: pool,
	}
}

// Pool is a certificate pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool { return ca.pool }

// WriteFile writes the CA certificate as PEM into t.TempDir() and returns
// its path: the CAFile of the push clients.
func (ca *CA) WriteFile(t testing.TB) string {
	t.Helper()
	return writeFile(t, "ca.pem", ca.PEM)
}

// ServerCertificate issues a TLS server certificate for 127.0.0.1, ::1
// and localhost.
func (ca *CA) ServerCertificate(t testing.TB) tls.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	cert, _, _ := ca.issue(t, tmpl)
	return cert
}

// ClientCertificate issues a TLS client certificate shaped like Apple's
// push certificates: subject UID uid (left out when empty) and, when
// topics are given, the Apple topics extension listing them. It returns
// the certificate and the PEM of certificate and key together.
func (ca *CA) ClientCertificate(t testing.TB, uid string, topics ...string) (tls.Certificate, []byte) {
	t.Helper()
	subject := pkix.Name{CommonName: "Apple Push Services: " + uid}
	if uid == "" {
		subject.CommonName = "sipwake pushtest client"
	} else {
		subject.ExtraNames = []pkix.AttributeTypeAndValue{{Type: OIDUserID, Value: uid}}
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(),
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(topics) > 0 {
		tmpl.ExtraExtensions = []pkix.Extension{{Id: OIDAppleTopics, Value: appleTopics(t, topics)}}
	}
	cert, certPEM, keyPEM := ca.issue(t, tmpl)
	return cert, append(certPEM, keyPEM...)
}

// appleTopics encodes topics as Apple does: a sequence of UTF8String
// topic, SEQUENCE { UTF8String kind } pairs.
func appleTopics(t testing.TB, topics []string) []byte {
	var inner []byte
	for _, topic := range topics {
		s, err := asn1.MarshalWithParams(topic, "utf8")
		if err != nil {
			t.Fatalf("pushtest: topics: %v", err)
		}
		kind := "app"
		if len(topic) > 5 && topic[len(topic)-5:] == ".voip" {
			kind = "voip"
		}
		k, _ := asn1.MarshalWithParams(kind, "utf8")
		seq, _ := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: k})
		inner = append(inner, s...)
		inner = append(inner, seq...)
	}
	out, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: inner})
	if err != nil {
		t.Fatalf("pushtest: topics: %v", err)
	}
	return out
}

func (ca *CA) issue(t testing.TB, tmpl *x509.Certificate) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("pushtest: key: %v", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatalf("pushtest: certificate: %v", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatalf("pushtest: key: %v", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("pushtest: key pair: %v", err)
	}
	return cert, certPEM, keyPEM
}

// writeFile writes data to a new file named name in t.TempDir().
func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatalf("pushtest: write %s: %v", name, err)
	}
	return path
}

func (ca *CA) serverTLS(t testing.TB, clientCAs bool) *tls.Config {
	conf := &tls.Config{
		Certificates: []tls.Certificate{ca.ServerCertificate(t)},
		MinVersion:   tls.VersionTLS12,
	}
	if clientCAs {
		conf.ClientAuth = tls.VerifyClientCertIfGiven
		conf.ClientCAs = ca.pool
	}
	return conf
}

// certTopics returns the topics an Apple-style client certificate
// serves: its subject UID (also stored in *uid) and the strings of the
// Apple topics extension. None means any topic.
func certTopics(cert *x509.Certificate, uid *string) []string {
	var topics []string
	for _, n := range cert.Subject.Names {
		if n.Type.Equal(OIDUserID) {
			if s, ok := n.Value.(string); ok {
				*uid = s
				topics = append(topics, s)
			}
		}
	}
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(OIDAppleTopics) {
			continue
		}
		var seq asn1.RawValue
		if _, err := asn1.Unmarshal(ext.Value, &seq); err != nil {
			continue
		}
		rest := seq.Bytes
		for len(rest) > 0 {
			var v asn1.RawValue
			var err error
			if rest, err = asn1.Unmarshal(rest, &v); err != nil {
				break
			}
			if v.Tag == asn1.TagUTF8String {
				topics = append(topics, string(v.Bytes))
			}
		}
	}
	return topics
}
