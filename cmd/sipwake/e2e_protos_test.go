package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipwake/sipwake/proxy/proxytest"
)

// protosArchive finds the PROTOS c07-sip test material, kept beside the
// repository (test data, not part of sipwake); SIPWAKE_PROTOS_ARCHIVE
// overrides.
func protosArchive(t *testing.T) string {
	return testData(t, "SIPWAKE_PROTOS_ARCHIVE", "protos-c07-sip/protos-c07-sip.tar.xz", "", "PROTOS c07-sip material")
}

// protosCase is one PROTOS case: an INVITE and the CANCEL that tears it
// down, placeholders filled in.
type protosCase struct {
	name           string
	invite, cancel []byte
}

// loadProtos unpacks the archive and fills in every case's placeholders
// for a device at dev ("127.0.0.1:port") calling 1001 at the PBX domain.
func loadProtos(t *testing.T, archive, dev string) []protosCase {
	dir := t.TempDir()
	if out, err := exec.Command("tar", "-xJf", archive, "-C", dir).CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v\n%s", archive, err, out)
	}
	files, err := filepath.Glob(filepath.Join(dir, "cases", "*"))
	if err != nil || len(files) != 4527 {
		t.Fatalf("PROTOS cases: %d files, %v", len(files), err)
	}
	sort.Strings(files)
	host, port, _ := net.SplitHostPort(dev)
	var out []protosCase
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f)
		invite, rest, ok := protosPDU(raw)
		if !ok {
			t.Fatalf("%s: bad framing", name)
		}
		cancel, _, ok := protosPDU(rest)
		if !ok {
			t.Fatalf("%s: bad teardown framing", name)
		}
		fill := func(b []byte) []byte {
			r := strings.NewReplacer("<To>", "1001@pbx.test", "<From>", "protos@"+host, "<From-Address>", host,
				"<From-IP>", host, "<Local-Port>", port, "<Branch-ID>", name, "<Call-ID>", "protos-"+name,
				"<CSeq>", "1", "<Teardown-Method>", "CANCEL")
			return []byte(r.Replace(string(b)))
		}
		inv, cnl := fill(invite), fill(cancel)
		body := 0
		if i := bytes.Index(inv, []byte("\r\n\r\n")); i >= 0 {
			body = len(inv) - i - 4
		}
		cl := []byte(strconv.Itoa(body))
		inv = bytes.ReplaceAll(inv, []byte("<Content-Length>"), cl)
		cnl = bytes.ReplaceAll(cnl, []byte("<Content-Length>"), []byte("0"))
		out = append(out, protosCase{name: name, invite: inv, cancel: cnl})
	}
	return out
}

// protosPDU splits "<N> " + N bytes off b.
func protosPDU(b []byte) (pdu, rest []byte, ok bool) {
	sp := bytes.IndexByte(b, ' ')
	if sp <= 0 {
		return nil, nil, false
	}
	n, err := strconv.Atoi(string(b[:sp]))
	if err != nil || n < 0 || sp+1+n > len(b) {
		return nil, nil, false
	}
	return b[sp+1 : sp+1+n], b[sp+1+n:], true
}

// TestE2EProtosC07 sends the 4,527 PROTOS c07-sip INVITE cases, each
// followed by its CANCEL, from a device to sipwake: over UDP, or over TCP
// for the cases too large for a datagram. sipwake must never crash or
// hang (PROTOS' own criterion: it answers an OPTIONS after every case),
// and no handler may panic (a recovered panic is logged). The PBX behind it
// declines every INVITE that gets through (486), as a busy PBX would.
func TestE2EProtosC07(t *testing.T) {
	archive := protosArchive(t)
	pbx := proxytest.NewUDP(t, pbxIP)
	cfg := e2eConfig(t, nil, t.TempDir())
	cfg.Upstream.URI = "sip:" + pbx.Addr()
	cfg.Upstream.Domains = []string{"pbx.test"}
	sw := startDaemon(t, cfg)
	forwarded := 0
	pbxDone := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(pbxDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			m, err := pbx.Recv(100 * time.Millisecond)
			if err != nil {
				continue
			}
			req, ok := m.(*sip.Request)
			if !ok {
				continue
			}
			switch req.Method {
			case sip.INVITE:
				forwarded++
				pbx.Reply(sw.UDP, req, 486, "Busy Here")
			case sip.CANCEL:
				pbx.Reply(sw.UDP, req, 200, "OK")
			}
		}
	}()

	// The device only sends: what sipwake answers it is not read here
	// (the corpus is about surviving, and the kernel drops what piles up).
	dev, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dev.Close()
	swUDP, err := net.ResolveUDPAddr("udp", sw.UDP)
	if err != nil {
		t.Fatal(err)
	}
	cases := loadProtos(t, archive, dev.LocalAddr().String())
	probe := proxytest.NewUDP(t, "")
	// alive sends an OPTIONS and waits for its 200, sending it again
	// every second as a UAC would over UDP (a burst of large cases can
	// fill sipwake's socket buffer), for up to 10 s.
	alive := func(id string) error {
		msg := "OPTIONS sip:" + sw.UDP + " SIP/2.0\nVia: SIP/2.0/UDP " + probe.Addr() + ";branch=z9hG4bK-alive" + id + "\n" +
			"Max-Forwards: 70\nFrom: <sip:probe@pbx.test>;tag=p\nTo: <sip:" + sw.UDP + ">\nCall-ID: alive-" + id + "\nCSeq: 1 OPTIONS\n\n"
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			probe.Send(sw.UDP, msg)
			resend := time.Now().Add(time.Second)
			for time.Now().Before(resend) {
				m, err := probe.Recv(time.Until(resend))
				if err != nil {
					break
				}
				if r, ok := m.(*sip.Response); ok && r.CallID() != nil && r.CallID().Value() == "alive-"+id {
					if r.StatusCode != 200 {
						return fmt.Errorf("OPTIONS answered %d", r.StatusCode)
					}
					return nil
				}
			}
		}
		return errors.New("no answer to OPTIONS in 10 s")
	}
	const udpMax = 65507
	overTCP := 0
	start := time.Now()
	for _, c := range cases {
		if len(c.invite) <= udpMax {
			if _, err := dev.WriteToUDP(c.invite, swUDP); err != nil {
				t.Fatalf("%s: send: %v", c.name, err)
			}
			_, _ = dev.WriteToUDP(c.cancel, swUDP)
		} else {
			overTCP++
			conn, err := net.DialTimeout("tcp", sw.TCP, 3*time.Second)
			if err != nil {
				t.Fatalf("%s: connect: %v", c.name, err)
			}
			_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
			_, _ = conn.Write(c.invite)
			_, _ = conn.Write(c.cancel)
			conn.Close()
		}
		if err := alive(c.name); err != nil {
			t.Fatalf("after PROTOS case %s (%d bytes): %v", c.name, len(c.invite), err)
		}
	}
	elapsed := time.Since(start)
	close(stop)
	<-pbxDone
	t.Logf("%d PROTOS cases (%d over TCP) in %s; %d INVITEs reached the PBX", len(cases), overTCP,
		elapsed.Round(time.Millisecond), forwarded)
	if forwarded == 0 {
		t.Error("not even the valid reference INVITE (case 0000000) reached the PBX")
	}
	if logs := sw.logs.String(); strings.Contains(logs, "panic") {
		t.Errorf("sipwake logged a panic:\n%s", grepLines(logs, "panic"))
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
