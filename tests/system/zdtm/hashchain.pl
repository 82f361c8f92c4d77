# zdtm test program in Perl (run by /usr/bin/perl under dmtcp): a SHA-256
# hash chain, h[i+1] = sha256(h[i] . pack("Q<", i)), a milestone kept every
# 64 steps in a hash and the last 4096 hex digests in an array.
#
# Checked on every step: the containers are consistent with the step count.
# At verification (SIGUSR1): the chain recomputed from the seed gives the
# current digest and every milestone. Same protocol as zdtmtst.h: "ready",
# "heartbeat", "result" in the current directory.
use strict;
use warnings;
use Digest::SHA qw(sha256 sha256_hex);
use Fcntl;
use IO::Handle;
use POSIX ();
use Time::HiRes ();

my $NAME = "hashchain.pl";
my $verify = 0;
$SIG{USR1} = sub { $verify = 1; };
my $start_pid = $$;

sub write_atomic {
    my ($path, $text) = @_;
    my $tmp = ".$path.tmp";
    open(my $f, ">", $tmp) or die "$tmp: $!";
    print $f $text;
    $f->flush();
    $f->sync();
    close($f);
    rename($tmp, $path) or die "rename $tmp: $!";
}

sub finish {
    my ($ok, $why) = @_;
    if ($ok && POSIX::getpid() != $start_pid) {
        ($ok, $why) = (0, "pid changed: " . POSIX::getpid() . ", started as $start_pid");
    }
    print STDERR "$NAME: $why\n" unless $ok;
    write_atomic("result", $ok ? "PASS\n" : "FAIL: $NAME: $why\n");
    exit($ok ? 0 : 1);
}

sysopen(my $hb, "heartbeat", O_RDWR | O_CREAT | O_TRUNC) or die "heartbeat: $!";
my $beats = 0;
sub heartbeat {
    $beats++;
    sysseek($hb, 0, 0);
    syswrite($hb, sprintf("%020d\n", $beats));
}

sub step { my ($h, $i) = @_; return sha256($h . pack("Q<", $i)); }

my $seed = sha256("dmtcp zdtm perl");
my ($h, $i) = ($seed, 0);
my %milestones = (0 => $seed);
my @derived;
heartbeat();
write_atomic("ready", "$start_pid\n");

while (!$verify) {
    my $want = $i < 4096 ? $i : 4096;
    finish(0, "state inconsistent at step $i: " . scalar(keys %milestones) . " milestones, " . scalar(@derived) . " derived")
        if scalar(keys %milestones) != int($i / 64) + 1 || scalar(@derived) != $want;
    finish(0, "last derived string is not the current digest at step $i")
        if @derived && $derived[-1] ne unpack("H*", $h);
    $h = step($h, $i);
    $i++;
    $milestones{$i} = $h if $i % 64 == 0;
    push @derived, unpack("H*", $h);
    shift @derived if @derived > 4096;
    heartbeat();
    Time::HiRes::sleep(0.002);
}

my $x = $seed;
for my $k (0 .. $i - 1) {
    finish(0, "milestone $k differs from the recomputed chain") if exists $milestones{$k} && $milestones{$k} ne $x;
    $x = step($x, $k);
}
finish(0, "digest at step $i differs from the recomputed chain") if $x ne $h;
finish(0, "only $i steps") if $i < 10;
finish(1, "");
