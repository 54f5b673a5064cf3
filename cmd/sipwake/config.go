package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
)

// The configuration tree below mirrors the YAML of INTERFACE.md "Configuration" key for key.
// Each field has a mapstructure tag (its YAML key) and a doc tag (the comment that
// `sipwake config default` writes above the key). Durations are time.Duration and are
// written with a unit ("30s", "168h"). Secrets are never values here, only paths to files.

// Config is the whole sipwake configuration, decoded strictly from YAML and SIPWAKE_* env.
type Config struct {
	// NodeID names this node in the store and in logs. Default: the hostname.
	NodeID string `mapstructure:"node_id" doc:"Names this node in the store and in logs; unique among the nodes that share a store. Empty: the hostname."`
	// Log configures the root logger.
	Log LogConfig `mapstructure:"log" doc:"Logging: JSON lines on stdout."`
	// SIP configures the SIP listeners and transport limits.
	SIP SIPConfig `mapstructure:"sip" doc:"SIP listeners, TLS, and who may send requests towards devices."`
	// Upstream names the PBX that devices register with.
	Upstream UpstreamConfig `mapstructure:"upstream" doc:"The PBX that devices register with and that calls come from."`
	// Store selects and configures the storage backend.
	Store StoreConfig `mapstructure:"store" doc:"Where bindings, push tokens, held calls and stored messages are kept."`
	// Registrar configures REGISTER handling.
	Registrar RegistrarConfig `mapstructure:"registrar" doc:"REGISTER handling: how registrations reach the PBX and how long they last."`
	// Push configures the push providers.
	Push PushConfig `mapstructure:"push" doc:"Push notification providers (APNs, FCM, a webhook)."`
	// Wake configures how requests for sleeping devices are held and delivered.
	Wake WakeConfig `mapstructure:"wake" doc:"Waking sleeping devices: held INVITEs and stored MESSAGEs."`
	// Ops configures the ops HTTP listener (/livez, /readyz, /metrics).
	Ops OpsConfig `mapstructure:"ops" doc:"Ops HTTP listener: /livez, /readyz, /metrics."`
	// Admin configures the admin HTTP API used by the CLI subcommands.
	Admin AdminConfig `mapstructure:"admin" doc:"Admin HTTP API (JSON) that the CLI subcommands call."`
	// Drain configures the graceful stop on SIGTERM.
	Drain DrainConfig `mapstructure:"drain" doc:"Graceful stop on SIGTERM: readiness off, held work finishes, then exit."`
	// HEP configures the HEPv3 export of SIP messages to a capture server.
	HEP HEPConfig `mapstructure:"hep" doc:"HEPv3 export of every SIP message received and sent to a capture server (Homer, heplify-server). The trace of SIP messages in the log is log.level debug, or a trace switch (sipwake trace)."`
}

// LogConfig configures the root logger.
type LogConfig struct {
	// Level is the minimum level logged: debug, info, warn or error. Default: info.
	Level string `mapstructure:"level" doc:"Minimum level logged: debug, info, warn or error. Changeable at run time through the admin API."`
	// Format is the line format: json or console. Default: json.
	Format string `mapstructure:"format" doc:"Line format: json (one object per line) or console (for people at a terminal)."`
}

// SIPConfig configures the SIP listeners and transport limits.
type SIPConfig struct {
	// Listen lists the listeners as scheme://host:port, scheme one of udp, tcp, tls, ws, wss.
	// Default: udp://0.0.0.0:5060 and tcp://0.0.0.0:5060.
	Listen []string `mapstructure:"listen" doc:"Listeners as scheme://host:port, scheme one of udp, tcp, tls, ws, wss. Port 0 picks a free port."`
	// Advertise is the host[:port] written in Via, Record-Route and Contact, for NAT and
	// Kubernetes. Default: empty, the listener's own address.
	Advertise string `mapstructure:"advertise" doc:"host[:port] written in Via, Record-Route and Contact, for NAT or Kubernetes. Empty: the listener's address."`
	// NodeAddress is the host[:port] other sipwake nodes reach this one at (its pod IP in
	// Kubernetes), for requests relayed to the device connections it holds. Default: empty
	// (the advertised address).
	NodeAddress string `mapstructure:"node_address" doc:"host[:port] other sipwake nodes reach this one at (its pod IP in Kubernetes) to relay requests to the device connections it holds; needed when several nodes share one advertised address. Empty: the advertised address."`
	// TLS configures the tls:// and wss:// listeners.
	TLS SIPTLSConfig `mapstructure:"tls" doc:"Certificate for the tls:// and wss:// listeners."`
	// TrustedSources lists the CIDRs (or single IPs) allowed to send requests towards
	// devices, normally the PBX. Default: empty.
	TrustedSources []string `mapstructure:"trusted_sources" doc:"CIDRs or single IPs (the PBX) allowed to send requests towards devices."`
	// MaxMessageBytes is the largest SIP message accepted, in bytes, 1500 to 65535.
	// Default: 65535.
	MaxMessageBytes int `mapstructure:"max_message_bytes" doc:"Largest SIP message accepted, in bytes, 1500 to 65535."`
}

// SIPTLSConfig configures the certificate of the tls:// and wss:// listeners.
type SIPTLSConfig struct {
	// CertFile is the PEM certificate chain file. Default: empty.
	CertFile string `mapstructure:"cert_file" doc:"PEM certificate chain file; needed by tls:// and wss:// listeners."`
	// KeyFile is the PEM private key file. Default: empty.
	KeyFile string `mapstructure:"key_file" doc:"PEM private key file matching cert_file."`
	// MinVersion is the lowest TLS version accepted: "1.2" or "1.3". Default: "1.2".
	MinVersion string `mapstructure:"min_version" doc:"Lowest TLS version accepted: \"1.2\" or \"1.3\"."`
}

// UpstreamConfig names the PBX.
type UpstreamConfig struct {
	// URI is the PBX as a sip: or sips: URI; empty means standalone mode. Default: empty.
	URI string `mapstructure:"uri" doc:"The PBX as a SIP URI, e.g. sip:pbx.example.com:5060;transport=udp. Empty: standalone mode (no PBX)."`
	// Domains lists the SIP domains the PBX serves: out-of-dialog requests from devices are
	// forwarded only to these. Default: empty, the host of URI.
	Domains []string `mapstructure:"domains" doc:"SIP domains the PBX serves; out-of-dialog requests from devices are forwarded only to these. Empty: the host of upstream.uri."`
	// Path adds a Path header (RFC 3327) to REGISTERs forwarded to the PBX. Default: true.
	Path bool `mapstructure:"path" doc:"Add a Path header (RFC 3327) to REGISTERs forwarded to the PBX."`
	// OptionsInterval is how often the PBX is sent an OPTIONS (sipwake_upstream_up);
	// 0 sends none. Default: 30s.
	OptionsInterval time.Duration `mapstructure:"options_interval" doc:"How often the PBX is sent an OPTIONS, so that sipwake_upstream_up tells whether it answers even without traffic; 0: never."`
}

// StoreConfig selects and configures the storage backend.
type StoreConfig struct {
	// Driver is embedded (one node, bbolt file) or redis (several nodes). Default: embedded.
	Driver string `mapstructure:"driver" doc:"embedded (a local file, one node only) or redis (shared by several nodes)."`
	// Embedded configures the embedded store.
	Embedded EmbeddedStoreConfig `mapstructure:"embedded" doc:"The embedded store (driver: embedded)."`
	// Redis configures the Redis store.
	Redis RedisStoreConfig `mapstructure:"redis" doc:"The Redis store (driver: redis): a single server, Sentinel or Cluster."`
}

// EmbeddedStoreConfig configures the embedded (bbolt) store.
type EmbeddedStoreConfig struct {
	// Path is the database file, created when missing. Default: ./data/sipwake.db.
	Path string `mapstructure:"path" doc:"Database file, created with its directory when missing."`
}

// RedisStoreConfig configures the Redis store.
type RedisStoreConfig struct {
	// Addresses lists host:port of the server, the Sentinels or the Cluster seeds.
	// Default: 127.0.0.1:6379.
	Addresses []string `mapstructure:"addresses" doc:"host:port of the server, of the Sentinels (with sentinel_master), or of the Cluster seed nodes."`
	// Username is the ACL user name. Default: empty.
	Username string `mapstructure:"username" doc:"ACL user name. Empty: the default user."`
	// PasswordFile is a file holding the password on its first line. Default: empty.
	PasswordFile string `mapstructure:"password_file" doc:"File holding the password (first line). Empty: no password."`
	// DB is the database number (single server and Sentinel only). Default: 0.
	DB int `mapstructure:"db" doc:"Database number (single server and Sentinel only)."`
	// SentinelMaster is the master name monitored by the Sentinels; set it to use
	// Sentinel. Default: empty.
	SentinelMaster string `mapstructure:"sentinel_master" doc:"Master name monitored by the Sentinels. Set: addresses are Sentinels."`
	// TLS connects with TLS, verified against the system roots. Default: false.
	TLS bool `mapstructure:"tls" doc:"Connect with TLS, verified against the system roots."`
	// KeyPrefix starts every key sipwake writes. Default: "sipwake:".
	KeyPrefix string `mapstructure:"key_prefix" doc:"Prefix of every key sipwake writes, so several deployments can share one Redis."`
	// WaitReplicas is how many replicas must acknowledge a stored MESSAGE (Redis WAIT)
	// before it is answered 202. Default: 0.
	WaitReplicas int `mapstructure:"wait_replicas" doc:"Replicas that must acknowledge a stored MESSAGE (Redis WAIT) before it is answered 202. 0: none (then use appendfsync always)."`
	// WaitTimeout bounds that wait (at most 2s). Default: 1s.
	WaitTimeout time.Duration `mapstructure:"wait_timeout" doc:"Longest wait for wait_replicas (at most 2s); fewer acknowledgements: the MESSAGE is answered 503."`
}

// RegistrarConfig configures REGISTER handling.
type RegistrarConfig struct {
	// Mode is passthrough (the device's REGISTER, credentials included, goes to the PBX) or
	// on_behalf (sipwake registers at the PBX with stored credentials). Default: passthrough.
	Mode string `mapstructure:"mode" doc:"passthrough (devices authenticate to the PBX themselves) or on_behalf (sipwake registers with stored credentials)."`
	// MinExpires is the shortest registration accepted; shorter asks get 423. Default: 60s.
	MinExpires time.Duration `mapstructure:"min_expires" doc:"Shortest device registration accepted; a shorter one is answered 423 Interval Too Brief."`
	// DefaultExpires is the registration time granted when the device asks for none.
	// Default: 1h.
	DefaultExpires time.Duration `mapstructure:"default_expires" doc:"Registration time granted when the device sends no Expires."`
	// MaxExpires is the longest registration granted (push-capable devices). Default: 168h.
	MaxExpires time.Duration `mapstructure:"max_expires" doc:"Longest device registration granted (push-capable devices sleep long)."`
	// MaxBindingsPerAOR caps the devices registered under one AOR. Default: 10.
	MaxBindingsPerAOR int `mapstructure:"max_bindings_per_aor" doc:"Most devices registered under one address of record."`
	// UpstreamContacts is per_device (one sipwake contact per device at the PBX) or per_aor
	// (one per AOR, sipwake forks to the devices). Default: per_device.
	UpstreamContacts string `mapstructure:"upstream_contacts" doc:"per_device: one sipwake contact per device at the PBX; per_aor: one per AOR whatever the number of devices (PBXs allowing one contact per extension), sipwake forks to the devices."`
	// RefreshPush sends a push with event register before a device's registration lapses.
	// Default: true.
	RefreshPush bool `mapstructure:"refresh_push" doc:"Send a register push before a device's registration lapses, so that the app wakes and registers again (devices that sent +sip.pnsreg, and legacy clients)."`
	// RefreshBefore is how long before expiry the refresh push goes. Default: 130s.
	RefreshBefore time.Duration `mapstructure:"refresh_before" doc:"How long before a device's registration lapses the refresh push goes (a third of a shorter registration); also the +sip.pnsreg value."`
	// RefreshPushType is the iOS form of the refresh push: background or alert. Default: background.
	RefreshPushType string `mapstructure:"refresh_push_type" doc:"iOS form of the refresh push: background or alert (never VoIP); Android gets a data message."`
	// RefreshPushInterval is the least time between two refresh pushes to one device.
	// Default: 5m.
	RefreshPushInterval time.Duration `mapstructure:"refresh_push_interval" doc:"Least time between two refresh pushes to one device."`
	// InactivityTimeout ends the on-behalf registration of a device silent this long.
	// Default: 168h.
	InactivityTimeout time.Duration `mapstructure:"inactivity_timeout" doc:"A device that has not registered by itself for this long is de-registered at the PBX and forgotten (on_behalf); 0 never."`
	// OnBehalf configures on_behalf mode.
	OnBehalf OnBehalfConfig `mapstructure:"on_behalf" doc:"How sipwake keeps sleeping devices registered at the PBX (mode on_behalf)."`
	// Credentials configures the encryption of stored credentials.
	Credentials CredentialsConfig `mapstructure:"credentials" doc:"Encryption of the stored HA1 credentials (AES-256-GCM)."`
}

// OnBehalfConfig is registrar.on_behalf.
type OnBehalfConfig struct {
	// Auth is how the PBX accepts sipwake's REGISTERs: credentials or trusted.
	// Default: credentials.
	Auth string `mapstructure:"auth" doc:"credentials: sipwake answers the PBX's challenge with the account's stored HA1; trusted: the PBX trusts sipwake's address (or TLS certificate) for REGISTERs marked X-Sipwake-On-Behalf. An AOR with stored credentials always uses them."`
	// TrustedDomains lists AOR domains whose PBX trusts sipwake, whatever Auth says.
	// Default: empty.
	TrustedDomains []string `mapstructure:"trusted_domains" doc:"AOR domains whose PBX trusts sipwake (trusted), whatever auth says."`
	// MaxAuthFailures stops the refreshes after this many refusals in a row. Default: 3.
	MaxAuthFailures int `mapstructure:"max_auth_failures" doc:"Refusals (401/403/407) in a row after which sipwake stops, marks the registration needs_login and sends the device one alert push."`
	// WipeOnAuthFailure deletes the stored credentials then. Default: false.
	WipeOnAuthFailure bool `mapstructure:"wipe_on_auth_failure" doc:"Delete the stored credentials when the PBX refused them max_auth_failures times."`
	// WipeOnInactivity deletes them when the device went silent. Default: false.
	WipeOnInactivity bool `mapstructure:"wipe_on_inactivity" doc:"Delete the stored credentials when the device has been silent for inactivity_timeout."`
	// Concurrency caps the on-behalf REGISTERs in flight on one node. Default: 256.
	Concurrency int `mapstructure:"concurrency" doc:"Most on-behalf REGISTERs in flight on one node."`
}

// CredentialsConfig is registrar.credentials.
type CredentialsConfig struct {
	// KeyFile holds the 32-byte AES key new credentials are sealed with. Default: empty.
	KeyFile string `mapstructure:"key_file" doc:"File holding the 32-byte key (raw, 64 hex digits or base64) stored credentials are encrypted with; needed to store credentials."`
	// OldKeyFiles hold previous keys, to read records not yet re-encrypted. Default: empty.
	OldKeyFiles []string `mapstructure:"old_key_files" doc:"Previous keys, still used to read credentials until sipwake accounts rekey moved them to key_file."`
}

// PushConfig configures the push providers.
type PushConfig struct {
	// CAFile is an extra PEM CA bundle trusted, besides the system roots, for every HTTPS
	// connection of the push side. Default: empty.
	CAFile string `mapstructure:"ca_file" doc:"Extra PEM CA bundle trusted, besides the system roots, by every push HTTPS connection (private gateways, tests)."`
	// IncludeCaller puts the caller's number and name in call pushes. Default: true.
	IncludeCaller bool `mapstructure:"include_caller" doc:"Put the caller's URI and display name in call pushes."`
	// APNs configures Apple Push Notification service.
	APNs APNsConfig `mapstructure:"apns" doc:"Apple Push Notification service."`
	// FCM configures Firebase Cloud Messaging.
	FCM FCMConfig `mapstructure:"fcm" doc:"Firebase Cloud Messaging (HTTP v1 API)."`
	// Webhook configures a generic HTTP push relay.
	Webhook WebhookConfig `mapstructure:"webhook" doc:"Generic HTTP relay that receives every push as JSON."`
}

// APNsConfig configures Apple Push Notification service.
type APNsConfig struct {
	// KeyFile is the .p8 token-authentication key file. Default: empty.
	KeyFile string `mapstructure:"key_file" doc:"Token-based authentication key (.p8 file); needs key_id and team_id."`
	// KeyID is the 10-character id of the key in KeyFile. Default: empty.
	KeyID string `mapstructure:"key_id" doc:"Id of the .p8 key (10 characters)."`
	// TeamID is the 10-character Apple developer team id. Default: empty.
	TeamID string `mapstructure:"team_id" doc:"Apple developer team id (10 characters)."`
	// Certificates lists PEM files, each holding a push certificate and its key, for
	// certificate-based authentication. Default: empty.
	Certificates []string `mapstructure:"certificates" doc:"PEM files, each with a push certificate and its private key, for certificate-based authentication."`
	// URL is the production base URL. Default: https://api.push.apple.com.
	URL string `mapstructure:"url" doc:"Production base URL, https://host[:port]."`
	// SandboxURL is the development base URL. Default: https://api.sandbox.push.apple.com.
	SandboxURL string `mapstructure:"sandbox_url" doc:"Development (sandbox) base URL, https://host[:port]."`
}

// FCMConfig configures Firebase Cloud Messaging.
type FCMConfig struct {
	// Projects lists the Firebase projects and their service-account files. Default: empty.
	Projects []FCMProject `mapstructure:"projects" doc:"Firebase projects, each with its service-account JSON file. In env: a JSON list."`
	// Endpoint is the FCM v1 base URL including /v1. Default: https://fcm.googleapis.com/v1.
	Endpoint string `mapstructure:"endpoint" doc:"FCM HTTP v1 base URL, including /v1."`
}

// FCMProject is one Firebase project.
type FCMProject struct {
	// ProjectID is the Firebase project id, as devices send it in pn-param.
	ProjectID string `mapstructure:"project_id" doc:"Firebase project id, as devices send it in pn-param."`
	// CredentialsFile is the service-account JSON file of the project.
	CredentialsFile string `mapstructure:"credentials_file" doc:"Service-account JSON file of the project."`
}

// WebhookConfig configures a generic HTTP push relay.
type WebhookConfig struct {
	// URL receives a POST per push; empty disables the webhook. Default: empty.
	URL string `mapstructure:"url" doc:"URL that receives a POST per push. Empty: no webhook."`
	// SecretFile holds the secret that signs each POST. Default: empty.
	SecretFile string `mapstructure:"secret_file" doc:"File holding the secret that signs each POST (first line). Empty: unsigned."`
}

// WakeConfig configures how requests for sleeping devices are held and delivered.
type WakeConfig struct {
	// InviteHoldTimeout is how long an INVITE is held for woken devices before 480.
	// Default: 30s.
	InviteHoldTimeout time.Duration `mapstructure:"invite_hold_timeout" doc:"How long an INVITE is held while devices wake; then 480 Temporarily Unavailable."`
	// CallerFeedback is the provisional response sent upstream while a device wakes:
	// none, 110, 180 or 183. Default: "180".
	CallerFeedback string `mapstructure:"caller_feedback" doc:"Provisional response sent upstream while a device wakes: none, 110, 180 or 183."`
	// NoAnswerStatus is the final status sent upstream when no device answered within
	// the hold. Default: 480.
	NoAnswerStatus int `mapstructure:"no_answer_status" doc:"Final status sent upstream when no device answered within the hold (a 4xx-6xx code)."`
	// MissedCallPush sends a push when a held call ends unanswered. Default: true.
	MissedCallPush bool `mapstructure:"missed_call_push" doc:"Send a missed-call push when a held call ends unanswered."`
	// CancelledCallDelivery is what an iOS device woken by a VoIP push gets when the
	// call ended before it registered again: invite_cancel (the INVITE then a CANCEL
	// with the Reason, so the app can report and end the CallKit call) or push_only.
	// Both also send an alert push saying the call was missed. Default: invite_cancel.
	CancelledCallDelivery string `mapstructure:"cancelled_call_delivery" doc:"iOS device woken for a call that ended before it registered: invite_cancel (INVITE then CANCEL, for CallKit) or push_only."`
	// AwakePushDelay is how long a push-capable device whose TCP/TLS connection is still
	// open may take to ring before it is pushed anyway. Default: 2s.
	AwakePushDelay time.Duration `mapstructure:"awake_push_delay" doc:"A push-capable device with an open TCP/TLS connection gets the INVITE at once, and a push only if it has not rung after this delay. 0: push at once."`
	// MessageAcceptTimeout is how long a MESSAGE waits for a device before it is stored
	// and answered 202. Default: 5s.
	MessageAcceptTimeout time.Duration `mapstructure:"message_accept_timeout" doc:"How long a MESSAGE waits for a device to answer before it is stored and answered 202 Accepted."`
	// MessageTTL is how long a stored MESSAGE is kept for delivery. Default: 168h.
	MessageTTL time.Duration `mapstructure:"message_ttl" doc:"How long a stored MESSAGE is kept for delivery."`
	// MessagePreview puts the start of a text message in its push. Default: false.
	MessagePreview bool `mapstructure:"message_preview" doc:"Put the first 120 characters of a text MESSAGE in its push (off for privacy)."`
	// MessageLateDelivery makes a device that registers for the AOR while a message still
	// waits for another of its devices a target of that message too. Default: true.
	MessageLateDelivery bool `mapstructure:"message_late_delivery" doc:"A device that registers for the AOR while a stored MESSAGE still waits for another of its devices gets it too."`
}

// OpsConfig configures the ops HTTP listener.
type OpsConfig struct {
	// Listen is the host:port of /livez, /readyz and /metrics. Default: ":9090".
	Listen string `mapstructure:"listen" doc:"host:port of /livez, /readyz and /metrics. Empty host: every address."`
}

// AdminConfig configures the admin HTTP API.
type AdminConfig struct {
	// Listen is the host:port of the admin API. Default: "127.0.0.1:9091".
	Listen string `mapstructure:"listen" doc:"host:port of the admin API. A non-loopback address needs token_file."`
	// TokenFile holds the bearer token required by the admin API. Default: empty.
	TokenFile string `mapstructure:"token_file" doc:"File holding the bearer token the admin API requires (first line). Empty: no token."`
}

// DrainConfig configures the graceful stop.
type DrainConfig struct {
	// Delay is the time between readiness turning off and refusing new work, so load
	// balancers notice. Default: 5s.
	Delay time.Duration `mapstructure:"delay" doc:"Time between readiness turning off and refusing new work, so load balancers notice."`
	// Timeout bounds the wait for held work to finish before exiting. Default: 60s.
	Timeout time.Duration `mapstructure:"timeout" doc:"Longest wait for held calls and in-flight work before exiting anyway."`
}

// HEPConfig configures the HEPv3 export.
type HEPConfig struct {
	// Address is the capture server, udp://host:port or tcp://host:port; empty turns the
	// export off. Default: empty.
	Address string `mapstructure:"address" doc:"Capture server as udp://host:port (one datagram per message) or tcp://host:port (reconnected with backoff). Empty: no export."`
	// CaptureID is the capture agent id sent in every packet, 0 to 4294967295.
	// Default: 2001.
	CaptureID int `mapstructure:"capture_id" doc:"Capture agent id (HEP chunk 12) that tells this capture point apart in Homer, 0 to 4294967295."`
	// NodeName is the capture node name sent in every packet. Default: empty, node_id.
	NodeName string `mapstructure:"node_name" doc:"Capture node name (HEP chunk 19). Empty: node_id."`
	// PasswordFile holds the HEP authentication key on its first line. Default: empty.
	PasswordFile string `mapstructure:"password_file" doc:"File holding the HEP authentication key (chunk 14) on its first line. Empty: none."`
	// Unmasked exports messages as on the wire, secrets included. Default: false.
	Unmasked bool `mapstructure:"unmasked" doc:"Export messages as on the wire, digest responses, push tokens, SDES keys and MESSAGE bodies included. false: the masked copy the trace logs."`
}

// envPrefix starts every environment variable that overrides a config key.
const envPrefix = "SIPWAKE_"

// configKey is one leaf key of the configuration tree.
type configKey struct {
	Path  string       // dotted YAML path, e.g. "sip.tls.cert_file"
	Index []int        // reflect field index path from Config
	Type  reflect.Type // Go type of the leaf
	Doc   string       // doc tag
}

var durationType = reflect.TypeOf(time.Duration(0))

// isSection reports whether t is a nested mapping (a struct other than a duration).
func isSection(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && t != durationType
}

// isObjectList reports whether t is a list of mappings, such as push.fcm.projects.
func isObjectList(t reflect.Type) bool {
	return t.Kind() == reflect.Slice && isSection(t.Elem())
}

// keyName returns the YAML key of a struct field.
func keyName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
	return name
}

// configKeys lists every leaf key of Config in declaration order. A list of mappings is a
// leaf: it is overridden as a whole.
func configKeys() []configKey {
	var keys []configKey
	var walk func(t reflect.Type, prefix string, index []int)
	walk = func(t reflect.Type, prefix string, index []int) {
		for i := range t.NumField() {
			f := t.Field(i)
			path := prefix + keyName(f)
			idx := append(append([]int(nil), index...), i)
			if isSection(f.Type) {
				walk(f.Type, path+".", idx)
				continue
			}
			keys = append(keys, configKey{Path: path, Index: idx, Type: f.Type, Doc: f.Tag.Get("doc")})
		}
	}
	walk(reflect.TypeOf(Config{}), "", nil)
	return keys
}

// envName returns the environment variable that overrides key.
func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// ConfigError reports every problem found while loading a configuration.
type ConfigError struct {
	Problems []Problem
}

// Error joins the problems on one line.
func (e *ConfigError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return strings.Join(parts, "; ")
}

// LoadConfig reads the YAML file at path (none: built-in defaults) and applies the
// SIPWAKE_* overrides found in env (nil: the process environment). Decoding is strict: an
// unknown key, a wrong type or a bad duration is a *ConfigError naming every bad key. The
// result is not validated; call Validate.
//
// Environment: every leaf key has a variable SIPWAKE_ + the key path in upper case with "_"
// for "." (SIPWAKE_SIP_MAX_MESSAGE_BYTES); an empty variable counts as unset; lists are comma
// separated; push.fcm.projects takes a JSON list of objects. Other SIPWAKE_* variables are
// ignored (Kubernetes puts service links such as SIPWAKE_PORT into every pod).
func LoadConfig(path string, env []string) (*Config, error) {
	if env == nil {
		env = os.Environ()
	}
	v := viper.New()
	def := reflect.ValueOf(defaultConfig()).Elem()
	keys := configKeys()
	// Seed every key so that overrides reach the decoded struct (viper #761, #1509).
	for _, k := range keys {
		v.SetDefault(k.Path, def.FieldByIndex(k.Index).Interface())
	}
	if path != "" {
		v.SetConfigFile(path)
		v.SetConfigType("yaml")
		if err := v.ReadInConfig(); err != nil {
			var pe viper.ConfigParseError
			if errors.As(err, &pe) {
				err = pe.Unwrap() // drop viper's capitalised "While parsing config:" prefix
			}
			return nil, fmt.Errorf("config %s: %w", path, err)
		}
	}
	// The environment is passed in rather than read by viper.BindEnv, so that the loader
	// is a pure function of its inputs; viper.Set puts each value in the override layer,
	// above the file, which is the precedence BindEnv would give.
	lookup := make(map[string]string, len(env))
	for _, kv := range env {
		if name, val, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(name, envPrefix) {
			lookup[name] = val
		}
	}
	for _, k := range keys {
		if val := lookup[envName(k.Path)]; val != "" {
			v.Set(k.Path, val)
		}
	}

	raw := v.AllSettings()
	problems := expandJSONLists(raw, reflect.TypeOf(Config{}), "")
	problems = append(problems, unknownKeys(raw, reflect.TypeOf(Config{}), "")...)
	if len(problems) > 0 {
		return nil, &ConfigError{Problems: problems}
	}

	cfg := &Config{}
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           cfg,
		TagName:          "mapstructure",
		WeaklyTypedInput: true, // env values are strings; YAML 180 and 1.2 are fine for string keys
		ErrorUnused:      true, // a backstop: unknownKeys reports them with their path first
		DecodeHook:       decodeHook,
	})
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if err := dec.Decode(raw); err != nil {
		return nil, &ConfigError{Problems: decodeProblems(err)}
	}
	if cfg.NodeID == "" {
		host, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("node_id: empty and no hostname: %w", err)
		}
		cfg.NodeID = host
	}
	return cfg, nil
}

// expandJSONLists replaces a string found where a list of mappings belongs (an env
// override such as SIPWAKE_PUSH_FCM_PROJECTS) by the JSON list it holds.
func expandJSONLists(raw map[string]any, t reflect.Type, prefix string) []Problem {
	var problems []Problem
	for i := range t.NumField() {
		f := t.Field(i)
		name := keyName(f)
		val, ok := lookupKey(raw, name)
		if !ok {
			continue
		}
		switch {
		case isSection(f.Type):
			if m, ok := val.(map[string]any); ok {
				problems = append(problems, expandJSONLists(m, f.Type, prefix+name+".")...)
			}
		case isObjectList(f.Type):
			s, ok := val.(string)
			if !ok {
				continue
			}
			var list []any
			if strings.TrimSpace(s) != "" {
				if err := json.Unmarshal([]byte(s), &list); err != nil {
					problems = append(problems, Problem{Key: prefix + name, Reason: "expected a JSON list of objects: " + err.Error()})
					continue
				}
			}
			if list == nil {
				list = []any{}
			}
			raw[name] = list
		}
	}
	return problems
}

// lookupKey finds key in raw, ignoring case as the decoder does.
func lookupKey(raw map[string]any, key string) (any, bool) {
	if v, ok := raw[key]; ok {
		return v, true
	}
	for k, v := range raw {
		if strings.EqualFold(k, key) {
			return v, true
		}
	}
	return nil, false
}

// unknownKeys reports every key of raw, at any depth and inside list items, that has no
// field in t, and every section that is not a mapping.
func unknownKeys(raw map[string]any, t reflect.Type, prefix string) []Problem {
	fields := make(map[string]reflect.StructField, t.NumField())
	for i := range t.NumField() {
		fields[keyName(t.Field(i))] = t.Field(i)
	}
	names := make([]string, 0, len(raw))
	for k := range raw {
		names = append(names, k)
	}
	sort.Strings(names)

	var problems []Problem
	for _, k := range names {
		path := prefix + k
		f, ok := fields[strings.ToLower(k)]
		if !ok {
			reason := "unknown key"
			if s := closestKey(strings.ToLower(k), fields); s != "" {
				reason += " (did you mean " + prefix + s + "?)"
			}
			problems = append(problems, Problem{Key: path, Reason: reason})
			continue
		}
		val := raw[k]
		switch {
		case isSection(f.Type):
			if val == nil {
				continue
			}
			m, ok := val.(map[string]any)
			if !ok {
				problems = append(problems, Problem{Key: path, Reason: "expected a mapping, got " + describe(val)})
				continue
			}
			problems = append(problems, unknownKeys(m, f.Type, path+".")...)
		case isObjectList(f.Type):
			list, ok := val.([]any)
			if !ok {
				continue // the decoder reports the wrong type
			}
			for i, item := range list {
				ipath := fmt.Sprintf("%s[%d]", path, i)
				m, ok := item.(map[string]any)
				if !ok {
					problems = append(problems, Problem{Key: ipath, Reason: "expected a mapping, got " + describe(item)})
					continue
				}
				problems = append(problems, unknownKeys(m, f.Type.Elem(), ipath+".")...)
			}
		}
	}
	return problems
}

// closestKey returns the field name nearest to k by edit distance, if close enough to be
// a likely misspelling.
func closestKey(k string, fields map[string]reflect.StructField) string {
	best, bestDist := "", 3
	for name := range fields {
		if d := editDistance(k, name); d < bestDist || (d == bestDist && best != "" && name < best) {
			best, bestDist = name, d
		}
	}
	if bestDist > len(k)/2 {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// describe names the YAML type of a decoded value for error messages.
func describe(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return "a number"
	case float32, float64:
		return "a number"
	case []any, []string:
		return "a list"
	case map[string]any:
		return "a mapping"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// decodeHook converts what YAML and env give into the config's Go types: durations from
// strings with a unit, string lists from comma-separated strings.
func decodeHook(from, to reflect.Type, data any) (any, error) {
	switch {
	case to == durationType:
		switch d := data.(type) {
		case time.Duration:
			return d, nil
		case string:
			s := strings.TrimSpace(d)
			if s == "0" {
				return time.Duration(0), nil
			}
			v, err := time.ParseDuration(s)
			if err != nil {
				return nil, fmt.Errorf("invalid duration %q, want a number with a unit such as \"30s\", \"5m\" or \"168h\"", d)
			}
			return v, nil
		case int, int64, int32, uint, uint64, uint32, float64, float32:
			if reflect.ValueOf(d).IsZero() {
				return time.Duration(0), nil
			}
			return nil, fmt.Errorf("duration %v has no unit, write it like \"30s\", \"5m\" or \"168h\"", d)
		}
	case to.Kind() == reflect.Slice && to.Elem().Kind() == reflect.String && from.Kind() == reflect.String:
		out := []string{}
		for _, part := range strings.Split(data.(string), ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
		return out, nil
	}
	return data, nil
}

// decodeProblems turns the decoder's error tree into one problem per bad key.
func decodeProblems(err error) []Problem {
	var out []Problem
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, x := range j.Unwrap() {
				walk(x)
			}
			return
		}
		if de, ok := e.(*mapstructure.DecodeError); ok {
			inner := de.Unwrap()
			var nested *mapstructure.DecodeError
			if _, ok := inner.(interface{ Unwrap() []error }); ok || errors.As(inner, &nested) {
				walk(inner)
				return
			}
			out = append(out, Problem{Key: de.Name(), Reason: decodeReason(inner)})
			return
		}
		// Decode wraps its joined errors in one fmt.Errorf("...%w") layer.
		if inner := errors.Unwrap(e); inner != nil {
			walk(inner)
			return
		}
		out = append(out, Problem{Reason: e.Error()})
	}
	walk(err)
	return out
}

// decodeReason words a decoder error for an operator.
func decodeReason(err error) string {
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("expected %s, got %q", typeWord(pe.Expected.Type()), fmt.Sprint(pe.Value))
	}
	var ue *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ue) {
		return fmt.Sprintf("expected %s, got %s", typeWord(ue.Expected.Type()), describe(ue.Value))
	}
	if msg, ok := strings.CutPrefix(err.Error(), "has invalid keys: "); ok {
		return "unknown keys: " + msg
	}
	return err.Error()
}

// typeWord names a config Go type for an operator.
func typeWord(t reflect.Type) string {
	switch {
	case t == durationType:
		return "a duration such as \"30s\""
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Int:
		return "an integer"
	case isObjectList(t):
		return "a list of mappings"
	case t.Kind() == reflect.Slice:
		return "a list"
	case isSection(t):
		return "a mapping"
	}
	return t.String()
}
