package fcm

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// DefaultTokenURL is Google's OAuth2 token endpoint, used when a
// service-account file names none.
const DefaultTokenURL = "https://oauth2.googleapis.com/token"

// serviceAccount is the part of a Google service-account JSON file that
// the JWT-bearer flow needs.
type serviceAccount struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	TokenURI     string `json:"token_uri"`
}

// readServiceAccount reads and checks a service-account file.
func readServiceAccount(path string) (*serviceAccount, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var sa serviceAccount
	if err := json.Unmarshal(data, &sa); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	switch {
	case sa.Type != "service_account":
		return nil, fmt.Errorf("%s: type %q is not service_account", path, sa.Type)
	case sa.ClientEmail == "":
		return nil, fmt.Errorf("%s: no client_email", path)
	case sa.PrivateKey == "":
		return nil, fmt.Errorf("%s: no private_key", path)
	}
	if err := checkRSAKey([]byte(sa.PrivateKey)); err != nil {
		return nil, fmt.Errorf("%s: private_key: %w", path, err)
	}
	if sa.TokenURI == "" {
		sa.TokenURI = DefaultTokenURL
	}
	return &sa, nil
}

// checkRSAKey reports whether key is a PEM RSA private key (PKCS #8 or
// PKCS #1), as oauth2's JWT flow needs.
func checkRSAKey(key []byte) error {
	block, _ := pem.Decode(key)
	if block == nil {
		return errors.New("not PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		if _, ok := k.(*rsa.PrivateKey); !ok {
			return errors.New("not an RSA key")
		}
		return nil
	}
	if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
		return errors.New("neither PKCS #8 nor PKCS #1")
	}
	return nil
}
