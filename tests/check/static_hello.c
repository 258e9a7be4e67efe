/* static_hello.c: a program test_check.sh links with -static (no loader, so no LD_PRELOAD). */
#include <stdio.h>

int main(void)
{
    puts("hello");
    return 0;
}
