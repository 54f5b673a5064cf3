package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// adminClientTimeout bounds one admin API call; a test push may take the provider's
// whole answer time (adminPushTimeout).
const adminClientTimeout = adminPushTimeout + 15*time.Second

// adminClient calls the admin API of a running sipwake over plain net/http, so that the
// CLI works wherever the binary runs (kubectl exec into a distroless image included).
type adminClient struct {
	base  string // "http://127.0.0.1:9091", without a trailing slash
	token string // bearer token; empty: none
	hc    *http.Client
}

func newAdminClient(base, token string) *adminClient {
	return &adminClient{
		base:  base,
		token: token,
		hc: &http.Client{
			Timeout: adminClientTimeout,
			// The admin API is reached directly: no proxy from the environment, and no
			// redirect that could carry the request elsewhere.
			Transport: &http.Transport{
				Proxy:                 nil,
				DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				TLSHandshakeTimeout:   5 * time.Second,
				ResponseHeaderTimeout: adminClientTimeout,
				MaxIdleConns:          2,
				IdleConnTimeout:       30 * time.Second,
			},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// adminBaseURL turns admin.listen into the URL the CLI calls: a wildcard or empty host
// becomes the loopback address of the same family.
func adminBaseURL(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("admin.listen %q: %v", listen, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port), nil
}

// parseAdminURL checks the --admin flag: a URL (http or https) or a bare host:port.
func parseAdminURL(s string) (string, error) {
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("--admin %q: %v", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("--admin %q: want http://host:port", s)
	}
	return strings.TrimSuffix(u.String(), "/"), nil
}

// errAdminAnswer is an error answer of the admin API.
type errAdminAnswer struct {
	Status  int
	Message string
}

func (e *errAdminAnswer) Error() string {
	return fmt.Sprintf("admin API: %s (HTTP %d)", e.Message, e.Status)
}

// call sends one request and returns the body of a 2xx answer. An error answer comes back
// as an exitError with status 1, an unreachable API as one with status 2.
func (c *adminClient) call(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, &exitError{code: exitConfig, err: err}
		}
		rd = bytes.NewReader(b)
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, &exitError{code: exitConfig, err: fmt.Errorf("admin API request: %v", err)}
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, unavailable(fmt.Errorf("admin API at %s cannot be reached: %v", c.base, errors.Unwrap(err)))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, unavailable(fmt.Errorf("admin API at %s: reading the answer: %v", c.base, err))
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return data, nil
	}
	ae := &errAdminAnswer{Status: resp.StatusCode}
	var eb adminError
	if json.Unmarshal(data, &eb) == nil && eb.Error != "" {
		ae.Message = eb.Error
	} else {
		msg := strings.TrimSpace(string(data))
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		ae.Message = msg
	}
	return nil, &exitError{code: exitConfig, err: ae}
}

// get calls the API and decodes the JSON answer into out; it also returns the raw body
// (printed as it is with -o json).
func (c *adminClient) get(ctx context.Context, method, path string, query url.Values, body, out any) ([]byte, error) {
	data, err := c.call(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, &exitError{code: exitConfig, err: fmt.Errorf("admin API: unreadable answer: %v", err)}
		}
	}
	return data, nil
}

// adminDo calls the admin API (method, path, query, body) and prints its
// answer: the raw JSON with -o json, else what text makes of it.
func adminDo[T any](ctx context.Context, a *adminCLI, method, path string, query url.Values, body any, text func(T) error) error {
	cl, err := a.client()
	if err != nil {
		return err
	}
	var out T
	data, err := cl.get(ctx, method, path, query, body, &out)
	if err != nil {
		return err
	}
	if a.output == "json" {
		return printJSON(a.stdout, data)
	}
	return text(out)
}
