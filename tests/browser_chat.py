#!/usr/bin/python3
"""The chat page in a real browser (Debian's chromium + chromium-driver,
driven over WebDriver by python3-selenium), with a real nc in the room.

  browser_chat.py PAGE_URL CHAT_HOST CHAT_PORT SCREENSHOT RESTART_FIFO

Two browser sessions (alice, bob) and nc (carol) talk in one room and send
direct messages; a line of HTML is shown as text and runs nothing; when the
test restarts the server (it writes to RESTART_FIFO... and waits for the
'restarted' line on stdin), the pages reconnect by themselves. Prints 'ok'.
"""
import subprocess, sys, time
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

page, host, port, shot = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
web_port = page.rsplit(":", 1)[1].strip("/")
WAIT = 15


def browser():
    o = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,700"):
        o.add_argument(a)
    o.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=o)


def lines(d):
    return [e.text for e in d.find_elements(By.CSS_SELECTOR, "#log div")]


def wait_line(d, want, who):
    try:
        WebDriverWait(d, WAIT).until(lambda d: any(want in l for l in lines(d)))
    except TimeoutException:
        sys.exit(f"{who} never showed {want!r}; the page has {lines(d)!r}")


def wait_state(d, want, who):
    try:
        WebDriverWait(d, WAIT).until(lambda d: d.find_element(By.ID, "state").text == want)
    except TimeoutException:
        sys.exit(f"{who}: state never became {want!r}: {d.find_element(By.ID, 'state').text!r}")


def join(d, nick):
    d.get(page)
    d.find_element(By.ID, "nick").send_keys(nick)
    d.find_element(By.CSS_SELECTOR, "#login button").click()
    wait_state(d, "connected", nick)
    wait_line(d, f"is now {nick}", nick)


def say(d, text):
    box = d.find_element(By.ID, "line")
    box.send_keys(text)
    d.find_element(By.CSS_SELECTOR, "#say button").click()


class Nc:
    def __init__(self):
        self.p = subprocess.Popen(["nc", host, port], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.seen = b""

    def send(self, line):
        self.p.stdin.write(line.encode() + b"\n")

    def expect(self, want):
        deadline = time.time() + WAIT
        import select
        while want.encode() not in self.seen:
            left = deadline - time.time()
            if left <= 0 or not select.select([self.p.stdout], [], [], left)[0]:
                sys.exit(f"nc never got {want!r}; it got {self.seen!r}")
            chunk = self.p.stdout.read1(65536) if hasattr(self.p.stdout, "read1") else self.p.stdout.read(1)
            if not chunk:
                sys.exit(f"nc: connection closed before {want!r}; it got {self.seen!r}")
            self.seen += chunk


alice, bob = browser(), browser()
try:
    join(alice, "alice")
    join(bob, "bob")
    nc = Nc()
    nc.send("/nick carol")
    wait_line(alice, "is now carol", "alice")

    say(alice, "hello from alice")
    wait_line(bob, "<alice> hello from alice", "bob")
    nc.expect("<alice> hello from alice")

    nc.send("hi from nc")
    wait_line(alice, "<carol> hi from nc", "alice")
    wait_line(bob, "<carol> hi from nc", "bob")

    say(bob, "/msg carol a secret for carol")
    nc.expect("<bob> (direct) a secret for carol")
    nc.send("/msg alice psst alice")
    wait_line(alice, "<carol> (direct) psst alice", "alice")
    say(bob, "/who")
    wait_line(bob, "* in lobby: alice, bob, carol", "bob")

    xss = "<img src=x onerror=alert(1)>"
    say(alice, xss)
    wait_line(bob, "<alice> " + xss, "bob")
    assert not bob.find_elements(By.CSS_SELECTOR, "#log img, #log script"), "an element was injected"
    for d in (alice, bob):
        try:
            d.switch_to.alert
            sys.exit("an alert ran")
        except NoAlertPresentException:
            pass

    # Someone who joins later sees the history, marked as history.
    late = browser()
    try:
        join(late, "dave")
        wait_line(late, "<alice> hello from alice", "dave")
        hist = late.find_elements(By.CSS_SELECTOR, "#log div.history")
        assert any("<alice> hello from alice" in e.text for e in hist), "history not marked"
    finally:
        late.quit()

    # The server drops the pages' connections (ss -K on its side); lines
    # said meanwhile are recovered when the pages come back: each once.
    subprocess.run(["ss", "-K", "sport", "=", ":" + web_port], check=True, capture_output=True)
    for i in (1, 2):
        nc.send(f"said while you were away {i}")
    for who, d in (("alice", alice), ("bob", bob)):
        wait_line(d, "said while you were away 2", who)
        wait_state(d, "connected", who)
        for i in (1, 2):
            n = sum(f"<carol> said while you were away {i}" in l for l in lines(d))
            assert n == 1, f"{who} shows line {i} {n} times: {lines(d)!r}"

    # The test restarts the server: the pages reconnect by themselves.
    print("restart", flush=True)
    if sys.stdin.readline().strip() != "restarted":
        sys.exit("no restart")
    for who, d in (("alice", alice), ("bob", bob)):
        wait_state(d, "connected", who)
        wait_line(d, f"is now {who}", who)
    nc = Nc()
    nc.send("/nick carol")
    nc.send("back after the restart")
    wait_line(alice, "<carol> back after the restart", "alice")
    wait_line(bob, "<carol> back after the restart", "bob")
    bob.save_screenshot(shot)
    print("ok", flush=True)
finally:
    alice.quit()
    bob.quit()
