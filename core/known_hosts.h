/* known_hosts.h - OpenSSH's known_hosts format (sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT"), read by
 * the engine itself so that every rule OpenSSH applies holds here too: @revoked keys are refused
 * whatever else the files say, hashed names (|1|salt|hmac) and patterns (* ? ! and [host]:port)
 * match as ssh matches them, and any number of files are read, the user's then the global ones.
 * The line parser needs nothing but the line (spec/fuzz feed it anything). */
#ifndef SC_KNOWN_HOSTS_H
#define SC_KNOWN_HOSTS_H

#include <stddef.h>

typedef enum { KH_PLAIN = 0, KH_REVOKED, KH_CERT_AUTHORITY } kh_marker;

/* One line's fields, pointing into the line. */
typedef struct {
    kh_marker marker;
    const char *hosts; /* patterns separated by commas, or one hashed name "|1|salt|hash" */
    size_t hosts_len;
    const char *type; /* "ssh-ed25519", ... */
    size_t type_len;
    const char *key; /* the key blob in base64 */
    size_t key_len;
} kh_line;

/* Splits one line (without its newline): 1 with the fields, 0 for a blank or comment line, -1
 * when it is malformed. */
int kh_parse_line(const char *line, size_t len, kh_line *out);

/* Whether the line's hosts field matches name (the lookup name: "host", or "[host]:port" when the
 * port is not 22): 1 it does, 0 it does not, -1 a negated pattern excludes it (the line then does
 * not apply, whatever its other patterns say). */
int kh_host_matches(const kh_line *l, const char *name);

/* The lookup name of host:port, as ssh writes it into known_hosts. */
void kh_lookup_name(char *out, size_t cap, const char *host, int port);

typedef enum {
    KH_NOT_FOUND = 0, /* no line for this host */
    KH_CA,            /* only a @cert-authority line names the host (host certificates) */
    KH_OTHER,         /* the host is known with keys of other types only */
    KH_CHANGED,       /* the host is known with another key of this type */
    KH_OK,            /* a line has this key */
    KH_REVOKED_KEY,   /* a @revoked line has this key */
} kh_result;

/* Calls visit for every line of the files, in order, whose hosts field matches name (revoked and
 * @cert-authority lines too). A file that does not exist is skipped. */
typedef void (*kh_visit)(const kh_line *l, const char *file, long lineno, void *ud);
void kh_each(const char *const *files, int n_files, const char *name, kh_visit visit, void *ud);

/* Checks the server's key (its type name and base64 blob) for name against every line of the
 * files, in order; REVOKED wins over everything, then OK, CHANGED, OTHER, CA. A file that does not
 * exist is no error; *where is set to "file:line" of the deciding line when there is one. */
kh_result kh_check(const char *const *files, int n_files, const char *name, const char *type,
                   const char *key_b64, char *where, size_t where_cap);

/* The known_hosts line for name's key (with its newline), the name hashed as ssh's
 * HashKnownHosts does (|1|salt|HMAC-SHA1) when hashed: its length, or -1. */
int kh_format_line(char *out, size_t cap, const char *name, const char *type, const char *key_b64,
                   int hashed);

#endif
