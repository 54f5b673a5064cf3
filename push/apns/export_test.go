package apns

import "time"

// AgeProviderToken makes the provider token look d older than it is.
func (n *Notifier) AgeProviderToken(d time.Duration) {
	n.token.Lock()
	defer n.token.Unlock()
	n.token.IssuedAt -= int64(d / time.Second)
}

// CertTopics exposes certTopics of the certificate in a PEM file.
func CertTopics(path string) ([]string, error) {
	_, topics, err := loadCertificate(path, time.Now())
	return topics, err
}
