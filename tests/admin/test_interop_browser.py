"""The status page in a real headless Chromium, against 1,000 accounts registered at a
real Kamailio registrar (10 of them with a wrong password: 403), the admin server
requiring a token:

- the totals the page shows are those of ``uac.reg_dump``; filtering to the failed
  accounts (the page's script, no reload) lists the 10 with their 403;
- disabling an account with its button asks for the token once (kept in sessionStorage,
  never in a URL), then Unregister needs no second asking, and the registrar drops the
  binding while the other accounts keep theirs;
- with JavaScript off the server-rendered tables, filter form and paging links work.

Screenshots go to the test's temp directory.
"""

from __future__ import annotations

import json
from collections import Counter

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase
from twisted.web import client
from twisted.web.http_headers import Headers

from tests.support.accounts import uacreg_rows
from tests.support.browser import screenshot, start_chromium
from tests.support.kamailio import KamailioRegistrar
from tests.support.peers import free_port
from tests.support.services import start_uac, wait_online
from tests.support.stores import sqlite_uacreg
from txuac.registrant.record import Flag

ACCOUNTS = 1000
WRONG_PASSWORD = 10  # the last accounts: answered 403
TOKEN = "a-status-page-token-of-32-chars!"
WAIT = 15  # seconds a browser step may take


def _by():
    from selenium.webdriver.common.by import By

    return By


def _wait(driver, condition, timeout: float = WAIT):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(condition)


def totals_shown(driver, url: str) -> tuple[dict[str, int], str]:
    """The totals table and the bring-up line of the overview."""
    driver.get(url)
    By = _by()
    totals = {cell.get_attribute("data-total"): int(cell.text)
              for cell in driver.find_elements(By.CSS_SELECTOR, "[data-total]")}
    return totals, driver.find_element(By.ID, "bring-up").text


def account_rows(driver) -> list[tuple[str, str, str]]:
    """(l_uuid, state, last error) of each row of the accounts table."""
    By = _by()
    rows = []
    for row in driver.find_elements(By.CSS_SELECTOR, "#accounts tbody tr"):
        cells = row.find_elements(By.TAG_NAME, "td")
        rows.append((row.find_element(By.TAG_NAME, "th").text, cells[3].text, cells[5].text))
    return rows


def filter_failed(driver) -> tuple[list, str, bool]:
    """Choose state "failed" and Show: the rows, the URL after, and whether the page stayed
    the same document (filtered by the script, not reloaded)."""
    from selenium.webdriver.support.ui import Select

    By = _by()
    driver.execute_script("window.notReloaded = true;")
    Select(driver.find_element(By.ID, "state")).select_by_visible_text("failed")
    driver.find_element(By.CSS_SELECTOR, "#account-filter button[type=submit]").click()
    _wait(driver, lambda d: d.find_element(By.ID, "accounts-count").text.startswith(f"{WRONG_PASSWORD} accounts match"))
    return account_rows(driver), driver.current_url, driver.execute_script("return window.notReloaded === true;")


def disable_and_unregister(driver, url: str) -> dict:
    """On an account's page: Disable (asks for the token), then Unregister (does not)."""
    By = _by()
    driver.get(url)
    result = driver.find_element(By.ID, "action-result")
    driver.find_element(By.CSS_SELECTOR, 'button[data-method="uac.reg_disable"]').click()
    _wait(driver, lambda d: d.find_element(By.ID, "token-form").is_displayed())
    seen = {"asked": result.text}
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
    _wait(driver, lambda d: result.text == "uac.reg_disable: done")
    driver.find_element(By.CSS_SELECTOR, 'button[data-method="uac.reg_unregister"]').click()
    _wait(driver, lambda d: result.text == "uac.reg_unregister: done")
    seen["token_form_hidden"] = not driver.find_element(By.ID, "token-form").is_displayed()
    _wait(driver, lambda d: d.find_element(By.CSS_SELECTOR, '[data-field="state"]').text == "disabled")
    seen["stored"] = driver.execute_script("return sessionStorage.getItem('txuac-rpc-token');")
    seen["url"] = driver.current_url
    seen["password"] = driver.find_element(By.CSS_SELECTOR, '[data-field="auth_password"]').text
    return seen


def follow_without_javascript(driver, url: str) -> dict:
    """Filter with the form and page with the links, JavaScript off."""
    from selenium.webdriver.support.ui import Select

    By = _by()
    driver.get(url)
    seen = {}
    driver.find_element(By.CSS_SELECTOR, 'a[rel="next"]').click()
    _wait(driver, lambda d: "page=2" in d.current_url and d.find_elements(By.ID, "accounts-count"))
    seen["page2"] = account_rows(driver)
    seen["page2_url"] = driver.current_url
    Select(driver.find_element(By.ID, "state")).select_by_visible_text("failed")
    driver.find_element(By.CSS_SELECTOR, "#account-filter button[type=submit]").click()
    # A click that navigates may return before the new page is read: wait for it.
    _wait(driver, lambda d: "state=failed" in d.current_url and d.find_elements(By.ID, "accounts-count"))
    seen["failed"] = account_rows(driver)
    seen["failed_url"] = driver.current_url
    seen["count"] = driver.find_element(By.ID, "accounts-count").text
    return seen


class StatusPageBrowserTests(TestCase):
    timeout = 300

    @defer.inlineCallbacks
    def setUp(self):
        self.registrar = KamailioRegistrar(self)
        host, port = self.registrar.address
        rows = uacreg_rows(ACCOUNTS, f"sip:{host}:{port}", realm=self.registrar.realm,
                           password_prefix=self.registrar.password_prefix)
        for row in rows[-WRONG_PASSWORD:]:
            row["auth_password"] = "not-the-password"
        path = yield sqlite_uacreg(self, rows)
        sip_port = free_port()
        self.service = start_uac(self, {
            "core": {"listen": [f"udp:127.0.0.1:{sip_port}"], "timer_t1": 200},
            "uac": {"reg_db_url": f"sqlite:///{path}", "reg_contact_addr": f"127.0.0.1:{sip_port}",
                    "reg_retry_interval": 5},
            "rpc": {"listen": "tcp:0:interface=127.0.0.1", "token": TOKEN},
        })
        yield wait_online(self.service, ACCOUNTS - WRONG_PASSWORD, timeout=120)
        deadline = reactor.seconds() + 60
        while self.service.registrant.counters().get("regactive", 0) < ACCOUNTS - WRONG_PASSWORD or \
                sum(1 for r in self.service.registrant.records.values() if r.last_status == 403) < WRONG_PASSWORD:
            self.assertLess(reactor.seconds(), deadline, self.registrar.explain("403s not all seen"))
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.base = f"http://127.0.0.1:{self.service.rpc.port}"

    @defer.inlineCallbacks
    def reg_dump(self) -> list[dict]:
        body = json.dumps({"jsonrpc": "2.0", "method": "uac.reg_dump", "id": 1}).encode()
        response = yield client.Agent(reactor).request(
            b"POST", f"{self.base}/RPC".encode(),
            Headers({b"Content-Type": [b"application/json"], b"Authorization": [f"Bearer {TOKEN}".encode()]}),
            client.FileBodyProducer(__import__("io").BytesIO(body)))
        answer = json.loads((yield client.readBody(response)))
        return answer["result"]

    @defer.inlineCallbacks
    def test_totals_filter_and_disable_in_a_browser(self):
        driver = yield threads.deferToThread(start_chromium, self)
        totals, bring_up = yield threads.deferToThread(totals_shown, driver, f"{self.base}/status")
        yield threads.deferToThread(screenshot, self, driver, "overview")
        records = yield self.reg_dump()
        expected = Counter(record["state"] for record in records)
        self.assertEqual(totals.pop("all"), len(records))
        self.assertEqual(totals, {state: expected.get(state, 0) for state in totals})
        self.assertEqual((totals["online"], totals["failed"]), (ACCOUNTS - WRONG_PASSWORD, WRONG_PASSWORD))
        self.assertTrue(bring_up.startswith(f"{ACCOUNTS - WRONG_PASSWORD} of {ACCOUNTS} online"), bring_up)

        rows, url, same_document = yield threads.deferToThread(filter_failed, driver)
        yield threads.deferToThread(screenshot, self, driver, "failed")
        failing = [f"uuid{n:05d}" for n in range(ACCOUNTS - WRONG_PASSWORD, ACCOUNTS)]
        self.assertEqual([row[0] for row in rows], failing)
        self.assertEqual({row[1] for row in rows}, {"failed"})
        self.assertTrue(all("403" in row[2] for row in rows), rows)
        self.assertTrue(url.endswith("/status?state=failed"), url)
        self.assertTrue(same_document)

        aor = f"sip:acct00000@{self.registrar.realm}"
        self.assertEqual(len((yield self.registrar.contacts_async(aor))), 1)
        seen = yield threads.deferToThread(
            disable_and_unregister, driver, f"{self.base}/status/account?l_uuid=uuid00000")
        yield threads.deferToThread(screenshot, self, driver, "disabled")
        self.assertEqual(seen["asked"], "Enter the RPC token to make changes.")
        self.assertTrue(seen["token_form_hidden"])
        self.assertEqual(seen["stored"], TOKEN)
        self.assertNotIn(TOKEN, seen["url"])
        self.assertEqual(seen["password"], "********")
        yield self.registrar.wait_for_contacts(aor, 0)
        self.assertTrue(self.service.registrant.records["uuid00000"].has(Flag.DISABLED))
        self.assertEqual(len((yield self.registrar.contacts_async(f"sip:acct00001@{self.registrar.realm}"))), 1)

    @defer.inlineCallbacks
    def test_read_only_views_with_javascript_off(self):
        driver = yield threads.deferToThread(start_chromium, self, False)
        seen = yield threads.deferToThread(follow_without_javascript, driver, f"{self.base}/status?size=25")
        yield threads.deferToThread(screenshot, self, driver, "no-javascript")
        self.assertEqual([row[0] for row in seen["page2"]], [f"uuid{n:05d}" for n in range(25, 50)])
        self.assertTrue(seen["page2_url"].endswith("/status?page=2&size=25"), seen["page2_url"])
        self.assertEqual([row[0] for row in seen["failed"]],
                         [f"uuid{n:05d}" for n in range(ACCOUNTS - WRONG_PASSWORD, ACCOUNTS)])
        self.assertIn("state=failed", seen["failed_url"])
        self.assertEqual(seen["count"], f"{WRONG_PASSWORD} accounts match; page 1 of 1")
