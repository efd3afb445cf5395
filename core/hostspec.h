/* hostspec.h - how to reach and log into one host, as the core takes it. */
#ifndef SC_HOSTSPEC_H
#define SC_HOSTSPEC_H

enum { SC_HOSTKEY_STRICT = 0, SC_HOSTKEY_ACCEPT_NEW, SC_HOSTKEY_OFF };

/* What the host key check leaves for the embedder to tell the user. */
enum { SC_HOSTKEY_NOTE_NONE = 0, SC_HOSTKEY_NOTE_LEARNED, SC_HOSTKEY_NOTE_UNCHECKED };

/* How to reach and log into one host. All strings are owned by the spec. */
typedef struct {
    char *host;
    int port;
    char *user;
    char *password;
    char **identities;
    int n_identities;
    char *passphrase;
    int agent; /* -1: use it when SSH_AUTH_SOCK is set and nothing else is given; 0 no; 1 yes */
    char *agent_sock;    /* the agent's socket (IdentityAgent), or NULL: $SSH_AUTH_SOCK */
    int identities_only; /* agent keys only when an identity file names them (IdentitiesOnly) */
    int forward_agent;   /* channels may ask for the agent (ForwardAgent) */
    char **certificates; /* user certificates (CertificateFile), tried with their keys */
    int n_certificates;
    char *proxy_command; /* the first hop is reached through this command's stdin/stdout */
    char *mux_path;      /* the first hop is reached through the mux at this socket (mux.c) */
    /* algorithm lists for libssh (OpenSSH's syntax, "+x", "-x", "^x" too), or NULL: defaults */
    char *kex, *hostkeys, *ciphers, *macs, *pubkeys;
    char *known_hosts;        /* where a learned key is recorded (the first user file), or NULL */
    char **known_hosts_files; /* every file checked, the user's then the global ones; none: */
    int n_known_hosts_files;  /* ~/.ssh/known_hosts{,2}, /etc/ssh/ssh_known_hosts{,2} */
    int hostkey_mode;
    int hash_known_hosts; /* a learned key's name is hashed (HashKnownHosts) */
    double timeout;       /* seconds for the whole connect of this hop */
    double keepalive;     /* seconds between keepalives once connected; 0 off */
    int keepalive_count;  /* keepalives without an answer before the connection is lost */
} sc_hostspec;

void sc_hostspec_free(sc_hostspec *spec);

#endif
