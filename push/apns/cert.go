package apns

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"os"
	"time"
)

var (
	// oidUserID is the subject attribute UID (0.9.2342.19200300.100.1.1)
	// where Apple push certificates carry the bundle id.
	oidUserID = asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 1}
	// oidAppleTopics is the extension (1.2.840.113635.100.6.3.6) listing
	// the topics of Apple's universal push certificates.
	oidAppleTopics = asn1.ObjectIdentifier{1, 2, 840, 113635, 100, 6, 3, 6}
)

// loadCertificate reads a PEM file holding a certificate and its
// (unencrypted) private key, and the topics the certificate serves.
func loadCertificate(path string, now time.Time) (tls.Certificate, []string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certificate: %w", err)
	}
	cert, err := tls.X509KeyPair(data, data)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certificate %s: %w", path, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("certificate %s: %w", path, err)
	}
	if now.After(leaf.NotAfter) {
		return tls.Certificate{}, nil, fmt.Errorf("certificate %s expired on %s", path, leaf.NotAfter.Format(time.DateOnly))
	}
	cert.Leaf = leaf
	return cert, certTopics(leaf), nil
}

// certTopics returns the topics an Apple push certificate serves: the
// bundle id in its subject UID, and the topics of Apple's extension (a
// sequence of UTF8String topics, each followed by a sequence of kinds).
// None means the certificate does not say.
func certTopics(c *x509.Certificate) []string {
	var topics []string
	add := func(s string) {
		for _, t := range topics {
			if t == s {
				return
			}
		}
		topics = append(topics, s)
	}
	for _, n := range c.Subject.Names {
		if n.Type.Equal(oidUserID) {
			if s, ok := n.Value.(string); ok && s != "" {
				add(s)
			}
		}
	}
	for _, ext := range c.Extensions {
		if !ext.Id.Equal(oidAppleTopics) {
			continue
		}
		var seq asn1.RawValue
		if _, err := asn1.Unmarshal(ext.Value, &seq); err != nil || !seq.IsCompound {
			continue
		}
		for rest := seq.Bytes; len(rest) > 0; {
			var v asn1.RawValue
			var err error
			if rest, err = asn1.Unmarshal(rest, &v); err != nil {
				break
			}
			if v.Class == asn1.ClassUniversal && v.Tag == asn1.TagUTF8String && len(v.Bytes) > 0 {
				add(string(v.Bytes))
			}
		}
	}
	return topics
}
