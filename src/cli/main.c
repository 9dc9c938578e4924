#include <stdio.h>
#include <string.h>

#include "subscope/version.h"

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--version")) {
        printf("subscope %s (%s)\n", ss_version(), ss_git_commit());
        return 0;
    }
    fprintf(stderr, "usage: subscope --version\n");
    return 1;
}
