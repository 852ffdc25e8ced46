"""The page in headless Chromium (Debian's chromium + chromedriver, driven by selenium), served by
serve.py on loopback: tests/test_web.py drives it, and `python web/browser.py OUT.png` saves a
screenshot of the page after sampling from the repository's exports/ (the picture in docs/runtimes.md).
"""

import shutil
import sys
import threading
import time
from pathlib import Path

import serve

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


class Page:
    """A headless Chromium on a page served from `root` by web/serve.py on loopback."""

    def __init__(self, root):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.httpd = serve.server(0, root=root, quiet=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/web/"
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1800",
                     "--autoplay-policy=no-user-gesture-required"):
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.set_script_timeout(600)
        self.logs = []

    def open(self, query=""):
        self.driver.get(self.url + query)
        deadline = time.monotonic() + 60
        while not self.driver.execute_script("return document.body.dataset.ready === 'true'"):
            if time.monotonic() > deadline:
                raise AssertionError(f"the page did not start: {self.text('status-error')!r} {self.console()}")
            time.sleep(0.2)

    def call(self, task, **params):
        result = self.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "zooTest.call(arguments[0], arguments[1]).then(done, (e) => done({error: e.message}));", task, params)
        assert "error" not in result, result["error"]
        return result

    def text(self, element_id):
        return self.driver.find_element("id", element_id).text

    def click_and_wait(self, button_id, timeout=300):
        button = self.driver.find_element("id", button_id)
        button.click()
        deadline = time.monotonic() + timeout
        while not button.is_enabled() or self.driver.execute_script("return arguments[0].disabled", button):
            if time.monotonic() > deadline:
                raise AssertionError(f"{button_id} still busy after {timeout} s")
            time.sleep(0.2)

    def console(self):
        self.logs += self.driver.get_log("browser")
        return self.logs

    def errors(self):
        return [entry for entry in self.console() if entry["level"] == "SEVERE"]

    def close(self):
        self.driver.quit()
        self.httpd.shutdown()


def main(argv=None):
    out = Path((argv or sys.argv[1:] or ["web/screenshot.png"])[0])
    page = Page(serve.ROOT)
    try:
        page.open()
        for button in ("gan-go", "diff-go", "vae-lerp", "text-go", "speech-go"):
            page.click_and_wait(button, timeout=900)
        height = page.driver.execute_script("return document.documentElement.scrollHeight")
        page.driver.set_window_size(1200, height + 100)  # the whole page in one picture
        page.driver.execute_script("window.scrollTo(0, 0)")
        page.driver.save_screenshot(str(out))
        errors = page.errors()
        print(f"saved {out}; console errors: {errors or 'none'}")
        return 1 if errors else 0
    finally:
        page.close()


if __name__ == "__main__":
    sys.exit(main())
