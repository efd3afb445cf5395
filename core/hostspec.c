/* hostspec.c - freeing a host spec (secrets wiped first). */
#include "hostspec.h"

#include <stdlib.h>
#include <string.h>

void sc_hostspec_free(sc_hostspec *spec)
{
    free(spec->host);
    free(spec->user);
    if (spec->password) {
        memset(spec->password, 0, strlen(spec->password));
        free(spec->password);
    }
    if (spec->passphrase) {
        memset(spec->passphrase, 0, strlen(spec->passphrase));
        free(spec->passphrase);
    }
    free(spec->agent_sock);
    for (int i = 0; i < spec->n_certificates; i++)
        free(spec->certificates[i]);
    free(spec->certificates);
    free(spec->proxy_command);
    free(spec->mux_path);
    free(spec->kex);
    free(spec->hostkeys);
    free(spec->ciphers);
    free(spec->macs);
    free(spec->pubkeys);
    for (int i = 0; i < spec->n_identities; i++)
        free(spec->identities[i]);
    free(spec->identities);
    free(spec->known_hosts);
    for (int i = 0; i < spec->n_known_hosts_files; i++)
        free(spec->known_hosts_files[i]);
    free(spec->known_hosts_files);
    memset(spec, 0, sizeof *spec);
}
