package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"github.com/sipwake/sipwake/registrar"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/proxy/hep"
)

// Problem is one thing wrong with a configuration, attached to the key that holds it.
type Problem struct {
	Key    string `json:"key"`    // dotted key path, e.g. "sip.tls.cert_file" or "push.fcm.projects[0].project_id"
	Reason string `json:"reason"` // lowercase, no trailing punctuation
}

// String writes the problem as "key.path: reason".
func (p Problem) String() string {
	if p.Key == "" {
		return p.Reason
	}
	return p.Key + ": " + p.Reason
}

// Bounds of sip.max_message_bytes: an Ethernet MTU at least (a REGISTER with push
// parameters and a few Via headers needs it), sipgo's parser limit (sip.ParseMaxMessageLength,
// also the largest UDP datagram) at most.
const (
	minMessageBytes = 1500
	maxMessageBytes = 65535
)

// Validate checks c and returns every problem found, in key order; none means c is usable.
// It is fast and pure except that it opens the files that *_file keys name, and loads the
// TLS key pair and CA bundle, to catch missing or unreadable secrets before the daemon
// starts.
func (c *Config) Validate() []Problem {
	v := &validator{}

	if strings.TrimSpace(c.NodeID) == "" {
		v.add("node_id", "must not be empty")
	} else if strings.ContainsFunc(c.NodeID, isSpaceOrControl) {
		v.add("node_id", "must not contain spaces or control characters")
	}

	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "console")

	c.validateSIP(v)

	if c.Upstream.URI != "" {
		var u sip.Uri
		if err := sip.ParseUri(c.Upstream.URI, &u); err != nil {
			v.add("upstream.uri", fmt.Sprintf("not a SIP URI: %v", err))
		} else if u.Scheme != "sip" && u.Scheme != "sips" {
			v.add("upstream.uri", fmt.Sprintf("scheme %q, want sip or sips", u.Scheme))
		} else if u.Host == "" {
			v.add("upstream.uri", "has no host")
		}
	}

	if c.Upstream.OptionsInterval < 0 {
		v.add("upstream.options_interval", "must not be negative")
	}
	for i, d := range c.Upstream.Domains {
		if !validHost(d) {
			v.add(fmt.Sprintf("upstream.domains[%d]", i), fmt.Sprintf("%q is not a DNS name or an IP address", d))
		}
	}

	c.validateStore(v)

	v.oneOf("registrar.mode", c.Registrar.Mode, "passthrough", "on_behalf")
	r := c.Registrar
	for _, e := range []struct {
		key string
		d   time.Duration
	}{{"registrar.min_expires", r.MinExpires}, {"registrar.default_expires", r.DefaultExpires}, {"registrar.max_expires", r.MaxExpires}} {
		switch {
		case e.d <= 0:
			v.add(e.key, "must be positive")
		case e.d%time.Second != 0:
			v.add(e.key, "must be whole seconds (SIP Expires counts seconds)")
		}
	}
	if r.MinExpires > 0 && r.DefaultExpires > 0 && r.MinExpires > r.DefaultExpires {
		v.add("registrar.default_expires", fmt.Sprintf("%s is below registrar.min_expires (%s)", formatDuration(r.DefaultExpires), formatDuration(r.MinExpires)))
	}
	if r.DefaultExpires > 0 && r.MaxExpires > 0 && r.DefaultExpires > r.MaxExpires {
		v.add("registrar.default_expires", fmt.Sprintf("%s is above registrar.max_expires (%s)", formatDuration(r.DefaultExpires), formatDuration(r.MaxExpires)))
	}
	if r.MaxBindingsPerAOR < 1 {
		v.add("registrar.max_bindings_per_aor", "must be at least 1")
	}
	v.oneOf("registrar.upstream_contacts", r.UpstreamContacts, "per_device", "per_aor")
	v.oneOf("registrar.refresh_push_type", r.RefreshPushType, "background", "alert")
	v.positive("registrar.refresh_before", r.RefreshBefore)
	v.positive("registrar.refresh_push_interval", r.RefreshPushInterval)
	if r.InactivityTimeout < 0 {
		v.add("registrar.inactivity_timeout", "must not be negative")
	}
	v.oneOf("registrar.on_behalf.auth", r.OnBehalf.Auth, "credentials", "trusted")
	for i, d := range r.OnBehalf.TrustedDomains {
		if !validHost(d) {
			v.add(fmt.Sprintf("registrar.on_behalf.trusted_domains[%d]", i), fmt.Sprintf("%q is not a DNS name or an IP address", d))
		}
	}
	if r.OnBehalf.MaxAuthFailures < 1 {
		v.add("registrar.on_behalf.max_auth_failures", "must be at least 1")
	}
	if r.OnBehalf.Concurrency < 1 {
		v.add("registrar.on_behalf.concurrency", "must be at least 1")
	}
	if r.Credentials.KeyFile != "" {
		if v.file("registrar.credentials.key_file", r.Credentials.KeyFile) {
			if _, err := registrar.ReadKeyFile(r.Credentials.KeyFile); err != nil {
				v.add("registrar.credentials.key_file", err.Error())
			}
		}
	}
	for i, f := range r.Credentials.OldKeyFiles {
		key := fmt.Sprintf("registrar.credentials.old_key_files[%d]", i)
		if v.file(key, f) {
			if _, err := registrar.ReadKeyFile(f); err != nil {
				v.add(key, err.Error())
			}
		}
	}
	if len(r.Credentials.OldKeyFiles) > 0 && r.Credentials.KeyFile == "" {
		v.add("registrar.credentials.old_key_files", "needs registrar.credentials.key_file (the key to re-encrypt under)")
	}

	c.validatePush(v)

	if r := c.Store.Redis; r.WaitReplicas < 0 {
		v.add("store.redis.wait_replicas", "must not be negative")
	} else if r.WaitTimeout <= 0 || r.WaitTimeout > 2*time.Second {
		v.add("store.redis.wait_timeout", "must be more than 0 and at most 2s")
	}
	w := c.Wake
	v.positive("wake.invite_hold_timeout", w.InviteHoldTimeout)
	v.oneOf("wake.caller_feedback", w.CallerFeedback, "none", "110", "180", "183")
	v.oneOf("wake.cancelled_call_delivery", w.CancelledCallDelivery, "invite_cancel", "push_only")
	if w.NoAnswerStatus < 400 || w.NoAnswerStatus > 699 {
		v.add("wake.no_answer_status", fmt.Sprintf("%d is not a failure status (400-699)", w.NoAnswerStatus))
	}
	if w.AwakePushDelay < 0 {
		v.add("wake.awake_push_delay", "must not be negative")
	}
	v.positive("wake.message_accept_timeout", w.MessageAcceptTimeout)
	v.positive("wake.message_ttl", w.MessageTTL)

	v.hostPort("ops.listen", c.Ops.Listen)
	v.hostPort("admin.listen", c.Admin.Listen)
	if c.Ops.Listen != "" && c.Ops.Listen == c.Admin.Listen {
		v.add("admin.listen", "same address as ops.listen")
	}
	v.file("admin.token_file", c.Admin.TokenFile)
	if c.Admin.TokenFile == "" && c.Admin.Listen != "" && !isLoopbackListen(c.Admin.Listen) {
		v.add("admin.token_file", fmt.Sprintf("required when admin.listen (%s) is not a loopback address", c.Admin.Listen))
	}

	if c.Drain.Delay < 0 {
		v.add("drain.delay", "must not be negative")
	}
	if c.Drain.Timeout < 0 {
		v.add("drain.timeout", "must not be negative")
	}
	c.validateHEP(v)
	return v.problems
}

func (c *Config) validateSIP(v *validator) {
	s := c.SIP
	if len(s.Listen) == 0 {
		v.add("sip.listen", "needs at least one listener")
	}
	needTLS := false
	seen := map[string]bool{}
	for i, l := range s.Listen {
		key := fmt.Sprintf("sip.listen[%d]", i)
		la, err := parseListen(l)
		if err != nil {
			v.add(key, err.Error())
			continue
		}
		if seen[la.Network+" "+la.Addr] {
			v.add(key, fmt.Sprintf("%s is listed twice", l))
		}
		seen[la.Network+" "+la.Addr] = true
		if la.Network == "tls" || la.Network == "wss" {
			needTLS = true
		}
	}
	if s.Advertise != "" {
		if err := checkAdvertise(s.Advertise); err != nil {
			v.add("sip.advertise", err.Error())
		}
	}
	if s.NodeAddress != "" {
		if err := checkAdvertise(s.NodeAddress); err != nil {
			v.add("sip.node_address", err.Error())
		}
	}

	certOK := v.file("sip.tls.cert_file", s.TLS.CertFile)
	keyOK := v.file("sip.tls.key_file", s.TLS.KeyFile)
	switch {
	case s.TLS.CertFile == "" && (needTLS || s.TLS.KeyFile != ""):
		v.add("sip.tls.cert_file", "required by tls:// and wss:// listeners")
	case s.TLS.KeyFile == "" && (needTLS || s.TLS.CertFile != ""):
		v.add("sip.tls.key_file", "required with sip.tls.cert_file")
	case s.TLS.CertFile != "" && certOK && keyOK:
		if _, err := tls.LoadX509KeyPair(s.TLS.CertFile, s.TLS.KeyFile); err != nil {
			v.add("sip.tls.cert_file", fmt.Sprintf("cannot load key pair with sip.tls.key_file: %v", err))
		}
	}
	v.oneOf("sip.tls.min_version", s.TLS.MinVersion, "1.2", "1.3")

	for i, src := range s.TrustedSources {
		if _, err := parseTrusted(src); err != nil {
			v.add(fmt.Sprintf("sip.trusted_sources[%d]", i), err.Error())
		}
	}
	if s.MaxMessageBytes < minMessageBytes || s.MaxMessageBytes > maxMessageBytes {
		v.add("sip.max_message_bytes", fmt.Sprintf("%d is outside %d..%d", s.MaxMessageBytes, minMessageBytes, maxMessageBytes))
	}
}

func (c *Config) validateStore(v *validator) {
	st := c.Store
	v.oneOf("store.driver", st.Driver, "embedded", "redis")
	switch st.Driver {
	case "embedded":
		if strings.TrimSpace(st.Embedded.Path) == "" {
			v.add("store.embedded.path", "required when store.driver is embedded")
		}
	case "redis":
		if len(st.Redis.Addresses) == 0 {
			v.add("store.redis.addresses", "needs at least one host:port when store.driver is redis")
		}
		for i, a := range st.Redis.Addresses {
			v.hostPortRequired(fmt.Sprintf("store.redis.addresses[%d]", i), a)
		}
	}
	v.file("store.redis.password_file", st.Redis.PasswordFile)
	if st.Redis.DB < 0 {
		v.add("store.redis.db", "must not be negative")
	}
}

func (c *Config) validatePush(v *validator) {
	p := c.Push
	if v.file("push.ca_file", p.CAFile) && p.CAFile != "" {
		if pem, err := os.ReadFile(p.CAFile); err != nil {
			v.add("push.ca_file", err.Error())
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			v.add("push.ca_file", "holds no PEM certificate")
		}
	}

	a := p.APNs
	v.file("push.apns.key_file", a.KeyFile)
	if a.KeyFile != "" {
		if a.KeyID == "" {
			v.add("push.apns.key_id", "required with push.apns.key_file")
		}
		if a.TeamID == "" {
			v.add("push.apns.team_id", "required with push.apns.key_file")
		}
	}
	for i, f := range a.Certificates {
		key := fmt.Sprintf("push.apns.certificates[%d]", i)
		if f == "" {
			v.add(key, "empty file name")
			continue
		}
		v.file(key, f)
	}
	v.baseURL("push.apns.url", a.URL, "https")
	v.baseURL("push.apns.sandbox_url", a.SandboxURL, "https")

	ids := map[string]bool{}
	for i, pr := range p.FCM.Projects {
		key := fmt.Sprintf("push.fcm.projects[%d]", i)
		if pr.ProjectID == "" {
			v.add(key+".project_id", "required")
		} else if ids[pr.ProjectID] {
			v.add(key+".project_id", fmt.Sprintf("%q is listed twice", pr.ProjectID))
		}
		ids[pr.ProjectID] = true
		if pr.CredentialsFile == "" {
			v.add(key+".credentials_file", "required")
		} else {
			v.file(key+".credentials_file", pr.CredentialsFile)
		}
	}
	v.baseURL("push.fcm.endpoint", p.FCM.Endpoint, "https")

	v.baseURL("push.webhook.url", p.Webhook.URL, "http", "https")
	v.file("push.webhook.secret_file", p.Webhook.SecretFile)
}

// validator collects problems.
type validator struct {
	problems []Problem
}

func (v *validator) add(key, reason string) {
	v.problems = append(v.problems, Problem{Key: key, Reason: reason})
}

func (v *validator) oneOf(key, val string, allowed ...string) {
	if !slices.Contains(allowed, val) {
		v.add(key, fmt.Sprintf("%q is not one of %s", val, strings.Join(allowed, ", ")))
	}
}

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.add(key, "must be positive")
	}
}

// file checks that a file named by key, when set, can be opened for reading and is not a
// directory. It reports whether the name is empty or the file is usable.
func (v *validator) file(key, name string) bool {
	if name == "" {
		return true
	}
	f, err := os.Open(name)
	if err != nil {
		v.add(key, err.Error())
		return false
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		v.add(key, err.Error())
		return false
	}
	if st.IsDir() {
		v.add(key, name+" is a directory")
		return false
	}
	return true
}

// hostPort checks a listen address: host:port with an optional host and a port 0..65535.
func (v *validator) hostPort(key, addr string) {
	if addr == "" {
		v.add(key, "required, as host:port")
		return
	}
	if err := checkHostPort(addr, true); err != nil {
		v.add(key, err.Error())
	}
}

// hostPortRequired checks a dial address: host:port with a host and a port 1..65535.
func (v *validator) hostPortRequired(key, addr string) {
	if err := checkHostPort(addr, false); err != nil {
		v.add(key, err.Error())
	}
}

// baseURL checks an optional base URL: one of the schemes, a host, no query or fragment.
func (v *validator) baseURL(key, raw string, schemes ...string) {
	if raw == "" {
		return
	}
	u, err := url.Parse(raw)
	if err != nil {
		v.add(key, fmt.Sprintf("not a URL: %v", err))
		return
	}
	if !slices.Contains(schemes, u.Scheme) {
		v.add(key, fmt.Sprintf("scheme %q, want %s", u.Scheme, strings.Join(schemes, " or ")))
		return
	}
	if u.Host == "" || u.Hostname() == "" {
		v.add(key, "has no host")
		return
	}
	if u.RawQuery != "" || u.Fragment != "" {
		v.add(key, "must not have a query or fragment")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			v.add(key, fmt.Sprintf("port %q is not 1..65535", p))
		}
	}
}

// checkHostPort checks host:port; listen allows an empty host and port 0.
func checkHostPort(addr string, listen bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (!listen && n == 0) {
		lo := 0
		if !listen {
			lo = 1
		}
		return fmt.Errorf("port %q in %q is not %d..65535", port, addr, lo)
	}
	if host == "" && !listen {
		return fmt.Errorf("%q has no host", addr)
	}
	if host != "" && !validHost(host) {
		return fmt.Errorf("host %q in %q is not an IP address or a DNS name", host, addr)
	}
	return nil
}

// validHost accepts an IP address or a DNS name.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return false
			}
		}
	}
	return true
}

func isSpaceOrControl(r rune) bool {
	return r <= ' ' || r == 0x7f
}

func isLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkAdvertise checks sip.advertise: host or host:port (an IPv6 host with a port in
// brackets).
func checkAdvertise(a string) error {
	if validHost(a) {
		return nil
	}
	if strings.HasPrefix(a, "[") && strings.HasSuffix(a, "]") {
		if ip, err := netip.ParseAddr(a[1 : len(a)-1]); err == nil && ip.Is6() {
			return nil
		}
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("%q is not host[:port]", a)
	}
	if !validHost(host) {
		return fmt.Errorf("host %q is not an IP address or a DNS name", host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not 1..65535", port)
	}
	return nil
}

// ListenAddr is one SIP listener: its transport and its host:port.
type ListenAddr struct {
	Network string // udp, tcp, tls, ws or wss
	Addr    string // host:port, as net.Listen takes it
}

// parseListen parses one sip.listen entry, scheme://host:port.
func parseListen(s string) (ListenAddr, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Opaque != "" {
		return ListenAddr{}, fmt.Errorf("%q is not scheme://host:port", s)
	}
	scheme := strings.ToLower(u.Scheme)
	switch scheme {
	case "udp", "tcp", "tls", "ws", "wss":
	default:
		return ListenAddr{}, fmt.Errorf("scheme %q in %q is not one of udp, tcp, tls, ws, wss", u.Scheme, s)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return ListenAddr{}, fmt.Errorf("%q must be scheme://host:port with nothing after the port", s)
	}
	if err := checkHostPort(u.Host, true); err != nil {
		return ListenAddr{}, err
	}
	return ListenAddr{Network: scheme, Addr: u.Host}, nil
}

// parseTrusted parses a CIDR, or a single IP as a /32 or /128.
func parseTrusted(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
		}
		return p.Masked(), nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen()), nil
}

// ListenURLs returns the SIP listeners of sip.listen in order. Entries that Validate
// rejects are left out.
func (c *Config) ListenURLs() []ListenAddr {
	out := make([]ListenAddr, 0, len(c.SIP.Listen))
	for _, l := range c.SIP.Listen {
		if la, err := parseListen(l); err == nil {
			out = append(out, la)
		}
	}
	return out
}

// TrustedPrefixes returns sip.trusted_sources as prefixes, single IPs as /32 or /128.
// Entries that Validate rejects are left out.
func (c *Config) TrustedPrefixes() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(c.SIP.TrustedSources))
	for _, s := range c.SIP.TrustedSources {
		if p, err := parseTrusted(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// TLSMinVersion returns sip.tls.min_version as a crypto/tls constant.
func (c *Config) TLSMinVersion() uint16 {
	if c.SIP.TLS.MinVersion == "1.3" {
		return tls.VersionTLS13
	}
	return tls.VersionTLS12
}

// validateHEP checks the hep.* keys.
func (c *Config) validateHEP(v *validator) {
	h := c.HEP
	if h.Address != "" {
		if _, _, err := hep.ParseAddress(h.Address); err != nil {
			v.add("hep.address", strings.TrimPrefix(err.Error(), "hep: "))
		}
	}
	if h.CaptureID < 0 || h.CaptureID > math.MaxUint32 {
		v.add("hep.capture_id", fmt.Sprintf("%d is outside 0..%d", h.CaptureID, uint32(math.MaxUint32)))
	}
	if strings.ContainsFunc(h.NodeName, isSpaceOrControl) {
		v.add("hep.node_name", "must not contain spaces or control characters")
	}
	if v.file("hep.password_file", h.PasswordFile) && h.PasswordFile != "" {
		if pw, err := readSecret(h.PasswordFile); err != nil {
			v.add("hep.password_file", err.Error())
		} else if pw == "" {
			v.add("hep.password_file", "first line is empty")
		}
	}
}
